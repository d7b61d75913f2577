"""Build the shipped material-intensity and carbon-factor tables from reference data.

Usage (from the repository root)::

    PYTHONPATH=.:services/lib .venv/bin/python -m models.material_intensity.build

Reads, in place (never copied into the repository):

* ``../shared/data/intensity/rasmi/RASMI_MI_ranges_20230905_long.csv`` — RASMI material
  intensity ranges (kg per m² gross floor area) for 3 functions × 4 structures × 32 regions ×
  8 materials (Fishman et al. 2024).
* ``../shared/data/intensity/carbon-factors-arup/material_carbon_factors_A1A3.csv`` — A1–A3
  embodied-carbon factors (kgCO2e per kg) for India, the Netherlands and the UK.

Writes ``services/lib/urbanfabric/data/material_intensity.csv`` (function, structure, region,
material, p05, p50, p95, n_raw) and ``services/lib/urbanfabric/data/carbon_factors.csv`` (one
factor per RASMI material, chosen by :data:`CARBON_SELECTION`, with the spread of its category).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO.parent / "shared" / "data"
RASMI = Path("intensity/rasmi/RASMI_MI_ranges_20230905_long.csv")
ARUP = Path("intensity/carbon-factors-arup/material_carbon_factors_A1A3.csv")
OUT_DIR = REPO / "services" / "lib" / "urbanfabric" / "data"

RASMI_VERSION = "RASMI MI ranges 20230905"
RASMI_COLUMNS = ("function", "structure", "R5_32", "material", "p_5", "p_50", "p_95",
                 "raw_HF_db_count")

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
    """Compact RASMI table: function, structure, region, material, p05, p50, p95, n_raw."""
    raw = pd.read_csv(rasmi_csv)
    missing = [c for c in RASMI_COLUMNS if c not in raw.columns]
    if missing:
        raise SystemExit(f"{rasmi_csv}: missing columns {missing}")
    df = raw[list(RASMI_COLUMNS)].rename(
        columns={"R5_32": "region", "p_5": "p05", "p_50": "p50", "p_95": "p95",
                 "raw_HF_db_count": "n_raw"}
    )
    key = ["function", "structure", "region", "material"]
    if df.duplicated(key).any():
        raise SystemExit(f"{rasmi_csv}: duplicate {key} rows")
    if df[["p05", "p50", "p95"]].isna().any().any():
        raise SystemExit(f"{rasmi_csv}: missing percentiles")
    if not ((df.p05 <= df.p50) & (df.p50 <= df.p95) & (df.p05 >= 0)).all():
        raise SystemExit(f"{rasmi_csv}: percentiles not ordered / negative")
    combos = df.groupby(["function", "structure", "region"]).size()
    if (combos != df.material.nunique()).any():
        raise SystemExit(f"{rasmi_csv}: some combinations lack a material")
    return df.sort_values(key).reset_index(drop=True)


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
            "category_n": int(len(cat)),
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
    rasmi, arup = args.data_root / RASMI, args.data_root / ARUP
    for p in (rasmi, arup):
        if not p.is_file():
            print(f"missing input: {p}", file=sys.stderr)
            return 2
    mi = build_intensity(rasmi)
    cf = build_carbon(arup, sorted(mi.material.unique()))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    mi_path, cf_path = args.out_dir / "material_intensity.csv", args.out_dir / "carbon_factors.csv"
    # 10 significant digits: drops float noise (2054.139999999997 -> 2054.14), relative
    # change < 1e-9, far below the precision of any intensity.
    mi.to_csv(mi_path, index=False, float_format="%.10g")
    cf.to_csv(cf_path, index=False, float_format="%.10g")
    print(f"{mi_path}: {len(mi)} rows, {mi_path.stat().st_size} bytes "
          f"({mi.function.nunique()} functions × {mi.structure.nunique()} structures × "
          f"{mi.region.nunique()} regions × {mi.material.nunique()} materials)")
    print(f"{cf_path}: {len(cf)} rows, {cf_path.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
