"""Build the shipped material-intensity and carbon-factor tables from reference data.

Usage (from the repository root)::

    PYTHONPATH=.:services/lib .venv/bin/python -m models.material_intensity.build

Reads, in place (never copied into the repository):

* ``../shared/data/intensity/rasmi/RASMI_MI_ranges_20230905_long.csv`` — RASMI material
  intensity ranges (kg per m² gross floor area) for 3 functions × 4 structures × 32 regions ×
  8 materials (Fishman et al. 2024).
* ``../shared/data/intensity/carbon-factors-arup/material_carbon_factors_A1A3.csv`` — A1–A3
  embodied-carbon factors (kgCO2e per kg) for India, the Netherlands and the UK.

* ``../shared/data/intensity/heeren-fishman/data/buildings.csv`` (latin-1) — the Heeren &
  Fishman material intensity records (v1.2, 910 buildings) that RASMI was built from.

Writes to ``services/lib/urbanfabric/data/``:

* ``material_intensity.csv`` — RASMI: function, structure, region, material, p00, p05, p25,
  p50, p75, p95, p100, n_raw (all seven percentiles: the Monte-Carlo draws follow a
  piecewise-linear inverse CDF through them).
* ``material_intensity_hf.csv`` — the same cube computed directly from the Heeren & Fishman
  records (:func:`build_hf_intensity`): a second, simpler source, with ``pooled_from`` saying
  which level of the region hierarchy the percentiles come from.
* ``default_floors.csv`` — floors p05 / p50 / p95 per R5 macro region × function from the
  Heeren & Fishman records (used when a building has no height).
* ``carbon_factors.csv`` — one factor per RASMI material, chosen by :data:`CARBON_SELECTION`,
  with the spread of its category.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO.parent / "shared" / "data"
RASMI = Path("intensity/rasmi/RASMI_MI_ranges_20230905_long.csv")
ARUP = Path("intensity/carbon-factors-arup/material_carbon_factors_A1A3.csv")
OUT_DIR = REPO / "services" / "lib" / "urbanfabric" / "data"

RASMI_VERSION = "RASMI MI ranges 20230905"
HF = Path("intensity/heeren-fishman/data/buildings.csv")
RASMI_PERCENTILES = {"p_0": "p00", "p_5": "p05", "p_25": "p25", "p_50": "p50", "p_75": "p75",
                     "p_95": "p95", "p_100": "p100"}
RASMI_COLUMNS = ("function", "structure", "R5_32", "material", *RASMI_PERCENTILES,
                 "raw_HF_db_count")
PCT = tuple(RASMI_PERCENTILES.values())
#: Probability level of each percentile column.
PCT_LEVELS = {"p00": 0.0, "p05": 5.0, "p25": 25.0, "p50": 50.0, "p75": 75.0, "p95": 95.0,
              "p100": 100.0}
#: Heeren & Fishman column per RASMI material. ``concrete2`` is the database's concrete with
#: sand + cement filled in where concrete itself is NA (816 records instead of 720), the same
#: choice RASMI makes.
HF_MATERIALS = {"aluminum": "aluminum", "brick": "brick", "concrete": "concrete2",
                "copper": "copper", "glass": "glass", "plastics": "plastics", "steel": "steel",
                "wood": "wood"}
#: Fewest records a percentile is computed from before pooling one level up the hierarchy.
HF_MIN_RECORDS = 5
#: Fewest records for a regional default-floors row (else the function's global row is used).
FLOORS_MIN_RECORDS = 10

#: One A1–A3 factor per RASMI material: (Arup region, category, entry). Rule: the IStructE
#: (UK) "worldwide" entry where one exists — RASMI regions are global and most buildings are
#: not built with UK-average products — else the IStructE generic entry, else the only or most
#: common building product in the compilation (copper and plastics exist only for India).
CARBON_SELECTION: dict[str, tuple[str, str, str, str]] = {
    # material: (region, category, entry, why)
    "concrete": ("UK", "Concrete", "In situ, unreinforced c30/37",
                 "generic structural concrete; RASMI counts rebar under steel"),
    "steel": ("UK", "Steel", "Reinforcement bar, worldwide",
              "worldwide average; rebar is most building steel outside steel frames"),
    "brick": ("UK", "Brick", "Single engineering clay brick, uk",
              "only IStructE brick entry"),
    "wood": ("UK", "Timber", "Studwork, softwood, excl sequestration",
             "sawn softwood, biogenic carbon excluded"),
    "glass": ("UK", "Glass", "General", "IStructE generic glass"),
    "aluminum": ("UK", "Aluminium", "Extruded, worldwide 31% recycled content",
                 "worldwide average, extruded (window frames, curtain walls)"),
    "copper": ("India", "Copper", "Coppper sheet",
               "only copper entry (spelling as in the source)"),
    "plastics": ("India", "Plastic", "u-PVC window frame",
                 "PVC is the dominant building plastic; highest of the 3 plastic entries"),
}
#: Arup category whose entries give the min–max spread shown next to each chosen factor.
CARBON_CATEGORY = {m: sel[1] for m, sel in CARBON_SELECTION.items()}


def build_intensity(rasmi_csv: Path) -> pd.DataFrame:
    """Compact RASMI table: function, structure, region, material, p00 … p100, n_raw."""
    raw = pd.read_csv(rasmi_csv)
    missing = [c for c in RASMI_COLUMNS if c not in raw.columns]
    if missing:
        raise SystemExit(f"{rasmi_csv}: missing columns {missing}")
    df = raw[list(RASMI_COLUMNS)].rename(
        columns={"R5_32": "region", "raw_HF_db_count": "n_raw", **RASMI_PERCENTILES}
    )
    key = ["function", "structure", "region", "material"]
    if df.duplicated(key).any():
        raise SystemExit(f"{rasmi_csv}: duplicate {key} rows")
    if df[list(PCT)].isna().any().any():
        raise SystemExit(f"{rasmi_csv}: missing percentiles")
    values = df[list(PCT)].to_numpy()
    if (np.diff(values, axis=1) < 0).any() or (values < 0).any():
        raise SystemExit(f"{rasmi_csv}: percentiles not ordered / negative")
    combos = df.groupby(["function", "structure", "region"]).size()
    if (combos != df.material.nunique()).any():
        raise SystemExit(f"{rasmi_csv}: some combinations lack a material")
    return df.sort_values(key).reset_index(drop=True)


def read_hf(hf_csv: Path) -> pd.DataFrame:
    """Heeren & Fishman records with RASMI codes, numeric intensities and floors.

    The CSV is latin-1 encoded. Text markers (``unspecified``, ``NA``, ``NULL``) become NaN:
    the codebook distinguishes them from a measured 0, which is kept.
    """
    raw = pd.read_csv(hf_csv, encoding="latin-1", low_memory=False)
    need = {"function", "structure", "R5_32", "no_floors", *HF_MATERIALS.values()}
    if not need <= set(raw.columns):
        raise SystemExit(f"{hf_csv}: missing columns {sorted(need - set(raw.columns))}")
    out = pd.DataFrame({
        "function": raw["function"].astype(str).str.strip(),
        "structure": raw["structure"].astype(str).str.strip(),
        "region": raw["R5_32"].astype(str).str.strip(),
        "floors": pd.to_numeric(raw["no_floors"], errors="coerce"),
    })
    for material, column in HF_MATERIALS.items():
        out[material] = pd.to_numeric(raw[column], errors="coerce")
    return out


def _percentiles(values: np.ndarray) -> dict[str, float]:
    return {c: float(np.percentile(values, q)) for c, q in PCT_LEVELS.items()}


def build_hf_intensity(hf_csv: Path, regions: list[str], functions: list[str],
                       structures: list[str], min_records: int = HF_MIN_RECORDS) -> pd.DataFrame:
    """The RASMI cube recomputed straight from the Heeren & Fishman records.

    For every function × structure × region × material the percentiles (p00 … p100, numpy's
    linear method) of the records of that combination; where fewer than ``min_records``
    exist, the records are pooled one level up: the R5 macro region (``ASIA``, ``OECD`` …,
    the prefix of the R5_32 code), then all regions, then all structures of the function,
    then every record of the material. ``pooled_from`` names the level used, ``n`` the
    records behind the percentiles and ``n_raw`` the records of the exact combination (as in
    RASMI). Unlike RASMI this adds no synthetic records and no similarity weighting: it is the
    plain empirical distribution, a transparent second opinion.
    """
    rec = read_hf(hf_csv)
    rec = rec[rec.function.isin(functions) & rec.structure.isin(structures)]
    rec = rec.assign(r5=rec.region.str.split("_").str[0])
    rows = []
    for material in HF_MATERIALS:
        m = rec[rec[material].notna()]
        for f in functions:
            for s in structures:
                fs = m[(m.function == f) & (m.structure == s)]
                for region in regions:
                    r5 = region.split("_")[0]
                    levels = (("region", fs[fs.region == region]), ("R5", fs[fs.r5 == r5]),
                              ("global", fs), ("function", m[m.function == f]), ("all", m))
                    own = len(levels[0][1])
                    name, pool = next(((n, p) for n, p in levels if len(p) >= min_records),
                                      levels[-1])
                    if pool.empty:
                        raise SystemExit(f"{hf_csv}: no {material} record at all")
                    rows.append({"function": f, "structure": s, "region": region,
                                 "material": material, **_percentiles(pool[material].to_numpy()),
                                 "n_raw": own, "n": len(pool), "pooled_from": name})
    key = ["function", "structure", "region", "material"]
    return pd.DataFrame(rows).sort_values(key).reset_index(drop=True)


def build_default_floors(hf_csv: Path, functions: list[str],
                         min_records: int = FLOORS_MIN_RECORDS) -> pd.DataFrame:
    """Floors p05 / p50 / p95 per R5 macro region × function, for buildings with no height.

    From the ``no_floors`` of the Heeren & Fishman records (numeric entries only: ranges such
    as "1,2" or "5 and more" are dropped). Regions with fewer than ``min_records`` records
    of a function get the function's all-region row (``R5 = "*"``). These are the floors of
    buildings that MI studies looked at, not of a census: a wide, crude prior, which is the
    point — it is used only where the height is unknown, and its range says so.
    """
    rec = read_hf(hf_csv)
    rec = rec[rec.function.isin(functions) & rec.floors.gt(0)]
    rec = rec.assign(r5=rec.region.str.split("_").str[0])
    rows = []
    for f in functions:
        fr = rec[rec.function == f]
        if len(fr) < min_records:
            raise SystemExit(f"{hf_csv}: only {len(fr)} records with floors for {f}")
        groups = [("*", fr)] + [(r5, g) for r5, g in fr.groupby("r5") if len(g) >= min_records]
        for r5, g in groups:
            q = np.percentile(g.floors.to_numpy(), [5, 50, 95])
            rows.append({"R5": r5, "function": f, "p05": max(1.0, float(q[0])),
                         "p50": max(1.0, float(q[1])), "p95": max(1.0, float(q[2])),
                         "n": len(g)})
    return pd.DataFrame(rows)


def build_carbon(arup_csv: Path, materials: list[str]) -> pd.DataFrame:
    """One factor per material from the Arup compilation, with its category's spread."""
    raw = pd.read_csv(arup_csv)
    if set(raw.units.unique()) != {"kgCO2e/kg"}:
        raise SystemExit(f"{arup_csv}: unexpected units {raw.units.unique()}")
    unknown = set(materials) - set(CARBON_SELECTION)
    if unknown:
        raise SystemExit(f"no carbon factor selected for RASMI materials {sorted(unknown)}")
    rows = []
    for material in materials:
        region, category, entry, why = CARBON_SELECTION[material]
        hit = raw[(raw.region == region) & (raw.category == category) & (raw.material == entry)]
        if len(hit) != 1:
            raise SystemExit(f"{arup_csv}: {len(hit)} rows for {(region, category, entry)}")
        cat = raw[raw.category == CARBON_CATEGORY[material]]
        rows.append({
            "material": material,
            "kgco2e_per_kg": float(hit.A1A3.iloc[0]),
            "category_min": float(cat.A1A3.min()),
            "category_max": float(cat.A1A3.max()),
            "category_n": len(cat),
            "stage": "A1-A3",
            "arup_region": region,
            "arup_category": category,
            "arup_entry": entry,
            "source": hit.source.iloc[0],
            "why": why,
        })
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out-dir", type=Path, default=OUT_DIR)
    args = ap.parse_args(argv)
    rasmi, arup, hf = args.data_root / RASMI, args.data_root / ARUP, args.data_root / HF
    for p in (rasmi, arup, hf):
        if not p.is_file():
            print(f"missing input: {p}", file=sys.stderr)
            return 2
    mi = build_intensity(rasmi)
    cf = build_carbon(arup, sorted(mi.material.unique()))
    dims = [sorted(mi[c].unique()) for c in ("region", "function", "structure")]
    hf_mi = build_hf_intensity(hf, *dims)
    floors = build_default_floors(hf, dims[1])
    args.out_dir.mkdir(parents=True, exist_ok=True)
    mi_path, cf_path = args.out_dir / "material_intensity.csv", args.out_dir / "carbon_factors.csv"
    hf_path, fl_path = args.out_dir / "material_intensity_hf.csv", args.out_dir / "default_floors.csv"
    # 10 significant digits: drops float noise (2054.139999999997 -> 2054.14), relative
    # change < 1e-9, far below the precision of any intensity.
    for frame, path in ((mi, mi_path), (cf, cf_path), (hf_mi, hf_path), (floors, fl_path)):
        frame.to_csv(path, index=False, float_format="%.10g")
    print(f"{hf_path}: {len(hf_mi)} rows, pooled from "
          f"{hf_mi.pooled_from.value_counts().to_dict()}")
    print(f"{fl_path}: {len(floors)} rows")
    print(f"{mi_path}: {len(mi)} rows, {mi_path.stat().st_size} bytes "
          f"({mi.function.nunique()} functions × {mi.structure.nunique()} structures × "
          f"{mi.region.nunique()} regions × {mi.material.nunique()} materials)")
    print(f"{cf_path}: {len(cf)} rows, {cf_path.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
