"""Per-job sanity checks on the final buildings table: implausible combinations as warnings.

Nothing here changes a value; each check names what looks wrong so that a user reads the
table with the right doubt (issue 18, "A sanity layer"). Every :class:`SanityWarning` has a
code, a message with the rule and its source, a count and up to five example building ids.

The limits are stated rules, not fitted numbers:

* **timber_too_tall** — structure ``T`` above 6 floors or 20 m. Light-frame timber is built to
  4–6 storeys; taller timber is engineered mass timber (IBC 2021 types IV-A–C, up to 18 storeys),
  rare enough that a predicted one deserves a look.
* **masonry_too_tall** — structure ``M`` above 8 floors or 30 m. China's seismic code limits
  multi-storey masonry to 7 storeys / 21 m even at intensity 6 (GB 50011-2010, Table 7.1.2);
  the limit here is looser.
* **storey_height_implausible** — height / floors outside 2.2–6 m.
* **too_slender** — height above 15 × √(footprint area) (a slenderness beyond that of nearly
  every tower; the record pencil towers reach ≈ 1:24) or above 830 m (the tallest building).
* **mass_per_gfa_outside_range** — a building's total mass per m² GFA outside 150–4,000 kg/m²:
  the p05–p95 totals of every RASMI type lie inside (a units guard). **district_mass_per_gfa**
  — the GFA-weighted mean outside 300–2,500 kg/m² (RASMI's p50 totals span 225–2,050).
* **no_housing** — at least 20 buildings with a known function and under 10 % of their GFA
  residential: urban floor area is mostly housing (about three quarters of the world's building
  floor area is residential, IEA / GlobalABC Global Status Report), so a district without it
  more likely shows a function model out of its domain than a real business district; named,
  not decided.
* **stock_per_capita_outside_range** — only when a population is given: the building stock
  per inhabitant outside 10–1,000 t/cap, bounds an order of magnitude around published
  building stocks per capita (Haberl et al. 2021, Environ. Sci. Technol. 55:3368, Austria and
  Germany; Krausmann et al. 2017, PNAS 114:1880, global), wide on purpose.
* **many_unknown** — over half of a class attribute unknown (roof material, roof shape,
  façade, function, age class).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

TIMBER_MAX_FLOORS, TIMBER_MAX_HEIGHT_M = 6, 20.0
MASONRY_MAX_FLOORS, MASONRY_MAX_HEIGHT_M = 8, 30.0
STOREY_HEIGHT_RANGE_M = (2.2, 6.0)
MAX_SLENDERNESS, MAX_HEIGHT_M = 15.0, 830.0
MASS_PER_GFA_RANGE = (150.0, 4000.0)
DISTRICT_MASS_PER_GFA_RANGE = (300.0, 2500.0)
MIN_HOUSING_SHARE, MIN_BUILDINGS_FOR_HOUSING = 0.10, 20
STOCK_PER_CAPITA_RANGE_T = (10.0, 1000.0)
MAX_UNKNOWN_SHARE = 0.5
#: Class attributes checked for unknowns: column → what the report calls it.
CLASS_ATTRIBUTES = {"roof_material": "roof material", "roof_shape": "roof shape",
                    "facade_material": "façade material", "building_function": "function",
                    "age_class": "age class"}
RESIDENTIAL_FUNCTIONS = {"RS", "RM", "RES"}
EXAMPLES = 5


@dataclass
class SanityWarning:
    """One implausible combination and how many buildings show it."""

    code: str
    message: str
    count: int
    examples: list[str] = field(default_factory=list)

    def text(self) -> str:
        ex = f" (e.g. {', '.join(self.examples)})" if self.examples else ""
        return f"[{self.code}] {self.count} × {self.message}{ex}"

    def as_dict(self) -> dict:
        return asdict(self)


def _num(table: pd.DataFrame, col: str) -> pd.Series:
    if col not in table:
        return pd.Series(np.nan, index=table.index)
    return pd.to_numeric(table[col], errors="coerce")


def _is_unknown(values: pd.Series) -> pd.Series:
    return values.isna() | values.astype(str).str.lower().isin(["unknown", "", "none", "nan"])


def _flag_part(table: pd.DataFrame, mask: pd.Series, message: str) -> dict:
    """A per-building check's count and first examples in one part of the table."""
    mask = mask.fillna(False).astype(bool)
    ids = table.loc[mask, "building_id"].astype(str).head(EXAMPLES).tolist() \
        if "building_id" in table else []
    return {"message": message, "count": int(mask.sum()), "examples": ids}


def _residential_part(table: pd.DataFrame, res: pd.Series | None, gfa: pd.Series) -> dict | None:
    if res is None:
        return None
    known = res.notna()
    w = gfa.where(np.isfinite(gfa) & (gfa > 0), 0.0)
    return {"known": int(known.sum()), "gfa_known": float(w[known].sum()),
            "gfa_residential": float(w[known & res.eq(True)].sum()),
            "examples": table.loc[known & res.eq(False), "building_id"].astype(str).head(EXAMPLES).tolist()
            if "building_id" in table else []}


def sanity_parts(table: pd.DataFrame) -> dict:
    """What :func:`sanity_from_parts` needs from one part of the table (a partition): counts,
    sums and examples, JSON-serialisable, so a job's checks merge without rereading it."""
    n = len(table)
    if not n:
        return {"rows": 0}
    height, floors, area = _num(table, "height_m"), _num(table, "floors"), _num(table, "footprint_area_m2")
    structure = table["structure"].astype(str).str.upper() if "structure" in table \
        else pd.Series("", index=table.index)
    flags = {}
    flags["timber_too_tall"] = _flag_part(
        table, (structure == "T") & ((floors > TIMBER_MAX_FLOORS) | (height > TIMBER_MAX_HEIGHT_M)),
        f"timber structure above {TIMBER_MAX_FLOORS} floors or {TIMBER_MAX_HEIGHT_M:.0f} m "
        "(light-frame timber: 4–6 storeys; taller is rare mass timber)")
    flags["masonry_too_tall"] = _flag_part(
        table, (structure == "M") & ((floors > MASONRY_MAX_FLOORS) | (height > MASONRY_MAX_HEIGHT_M)),
        f"masonry structure above {MASONRY_MAX_FLOORS} floors or {MASONRY_MAX_HEIGHT_M:.0f} m "
        "(GB 50011-2010 limits masonry to 7 storeys / 21 m)")
    storey = height / floors.where(floors > 0)
    lo, hi = STOREY_HEIGHT_RANGE_M
    flags["storey_height_implausible"] = _flag_part(table, (storey < lo) | (storey > hi),
                                                    f"height / floors outside {lo}–{hi} m")
    slender = height > MAX_SLENDERNESS * np.sqrt(area.where(area > 0))
    flags["too_slender"] = _flag_part(
        table, slender | (height > MAX_HEIGHT_M),
        f"height above {MAX_SLENDERNESS:.0f} × √(footprint area) or {MAX_HEIGHT_M:.0f} m")
    mass, gfa = _num(table, "mass_total_kg"), _num(table, "gfa_m2")
    per_gfa = mass / gfa.where(gfa > 0)
    lo, hi = MASS_PER_GFA_RANGE
    flags["mass_per_gfa_outside_range"] = _flag_part(
        table, (per_gfa < lo) | (per_gfa > hi),
        f"total mass per m² GFA outside {lo:,.0f}–{hi:,.0f} kg/m² (RASMI p05–p95 totals)")
    ok = np.isfinite(mass) & np.isfinite(gfa) & (gfa > 0)
    bf = None
    if "building_function" in table:
        f = table["building_function"]
        bf = (f.astype(str).str.lower() == "residential").where(~_is_unknown(f))
    fn = None
    if "function" in table:
        f = table["function"]
        fn = f.astype(str).str.upper().isin(RESIDENTIAL_FUNCTIONS).where(~_is_unknown(f))
    unknown = {}
    for col in CLASS_ATTRIBUTES:
        if col in table:
            mask = _is_unknown(table[col])
            unknown[col] = {"count": int(mask.sum()), "examples": table.loc[mask, "building_id"].astype(str)
                            .head(EXAMPLES).tolist() if "building_id" in table else []}
    return {"rows": n, "flags": flags, "ok": int(ok.sum()), "mass_ok": float(mass[ok].sum()),
            "gfa_ok": float(gfa[ok].sum()),
            "building_function_known_any": bool(bf is not None and bf.notna().any()),
            "residential_building_function": _residential_part(table, bf, gfa),
            "residential_function": _residential_part(table, fn, gfa),
            "unknown": unknown}


def _merge_residential(parts: list[dict], name: str) -> dict | None:
    rows = [p[name] for p in parts if p.get(name) is not None]
    if not rows:
        return None
    return {"known": sum(r["known"] for r in rows), "gfa_known": sum(r["gfa_known"] for r in rows),
            "gfa_residential": sum(r["gfa_residential"] for r in rows),
            "examples": [e for r in rows for e in r["examples"]][:EXAMPLES]}


def sanity_from_parts(parts: list[dict], population: float | None = None) -> list[SanityWarning]:
    """Every check of the module docstring over the parts of a table (:func:`sanity_parts`),
    in a fixed order: the same warnings as :func:`sanity_checks` on the whole table."""
    parts = [p for p in parts if p.get("rows")]
    n = sum(p["rows"] for p in parts)
    out: list[SanityWarning] = []
    if not n:
        return out
    for code in parts[0]["flags"]:
        count = sum(p["flags"][code]["count"] for p in parts)
        if count:
            out.append(SanityWarning(code, parts[0]["flags"][code]["message"], count,
                                     [e for p in parts for e in p["flags"][code]["examples"]][:EXAMPLES]))
    ok = sum(p["ok"] for p in parts)
    mass_ok, gfa_ok = sum(p["mass_ok"] for p in parts), sum(p["gfa_ok"] for p in parts)
    if ok:
        mean = mass_ok / gfa_ok
        lo, hi = DISTRICT_MASS_PER_GFA_RANGE
        if not lo <= mean <= hi:
            out.append(SanityWarning("district_mass_per_gfa",
                                     f"the area's mean stock is {mean:,.0f} kg/m² GFA, outside "
                                     f"{lo:,.0f}–{hi:,.0f} kg/m² (RASMI p50 totals: 225–2,050)", ok))
    # As _residential: the predicted function where any is known, else the RASMI key.
    use_bf = any(p.get("building_function_known_any") for p in parts)
    res = _merge_residential(parts, "residential_building_function" if use_bf else "residential_function")
    if res is not None:
        total = res["gfa_known"]
        share = res["gfa_residential"] / total if total > 0 else np.nan
        if res["known"] >= MIN_BUILDINGS_FOR_HOUSING and share < MIN_HOUSING_SHARE:
            out.append(SanityWarning(
                "no_housing",
                f"buildings with a known function and only {share:.2%} of their GFA residential "
                f"(under {MIN_HOUSING_SHARE:.0%}; urban floor area is mostly housing): check the "
                "function model's domain before trusting the RS/RM/NR split",
                res["known"], res["examples"]))
    if population is not None and population > 0 and ok:
        per_cap = mass_ok / 1000.0 / population
        lo, hi = STOCK_PER_CAPITA_RANGE_T
        if not lo <= per_cap <= hi:
            out.append(SanityWarning(
                "stock_per_capita_outside_range",
                f"building stock of {per_cap:,.0f} t per inhabitant (population {population:,.0f}), "
                f"outside {lo:,.0f}–{hi:,.0f} t/cap (published building stocks, e.g. Haberl et al. 2021)", ok))
    for col, name in CLASS_ATTRIBUTES.items():
        if col not in parts[0]["unknown"]:
            continue
        rows = [p["unknown"][col] for p in parts if col in p["unknown"]]
        unknown = sum(r["count"] for r in rows)
        if unknown / n > MAX_UNKNOWN_SHARE:
            out.append(SanityWarning(
                "many_unknown", f"buildings with {name} unknown ({unknown / n:.0%} of "
                f"{n}, over {MAX_UNKNOWN_SHARE:.0%}): see the abstention table", unknown,
                [e for r in rows for e in r["examples"]][:EXAMPLES]))
    return out


def sanity_checks(table: pd.DataFrame, population: float | None = None) -> list[SanityWarning]:
    """Every check of the module docstring that fires on ``table``, in a fixed order."""
    return sanity_from_parts([sanity_parts(table)], population)


def main(argv: list[str] | None = None) -> int:
    """``python -m urbanfabric.outputs.sanity BUILDINGS.parquet [--population N]``: the sanity
    warnings and the abstention table of a buildings table, as the report shows them."""
    import argparse

    import geopandas as gpd

    from urbanfabric.outputs.abstention import abstention_md, abstentions

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("table", help="a buildings GeoParquet")
    ap.add_argument("--population", type=float, default=None)
    args = ap.parse_args(argv)
    table = gpd.read_parquet(args.table)
    warnings = sanity_checks(table, args.population)
    print(f"{len(table)} buildings, {len(warnings)} sanity warnings")
    for w in warnings:
        print(" ", w.text())
    print()
    print(abstention_md(abstentions(table)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
