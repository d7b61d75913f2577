"""How many class attributes the job kept and how many it left ``unknown``, and why.

Per class attribute (roof material, roof shape, façade, function, age class, structure): the
buildings with a value, the buildings without one grouped by the ``*_unknown_reason`` column
where the table has it (issue 18: out-of-domain abstention writes ``out_of_domain`` there), and
for the structure — which always has a value, possibly a default — the counts per
``structure_source`` where present, else the ``structure_default`` fallback token. Reads
whichever columns exist, so it works on tables with and without them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import pandas as pd

#: Class attribute → (value column, reason column).
ATTRIBUTES: dict[str, tuple[str, str]] = {
    "roof material": ("roof_material", "roof_material_unknown_reason"),
    "roof shape": ("roof_shape", "roof_shape_unknown_reason"),
    "façade material": ("facade_material", "facade_material_unknown_reason"),
    "function": ("building_function", "building_function_unknown_reason"),
    "age class": ("age_class", "age_class_unknown_reason"),
}
NO_REASON = "no reason recorded"


@dataclass
class Abstention:
    """Kept vs unknown for one attribute, the unknowns by reason, and (structure) the sources."""

    attribute: str
    kept: int
    unknown: int
    reasons: dict[str, int] = field(default_factory=dict)
    sources: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def _unknown(values: pd.Series) -> pd.Series:
    return values.isna() | values.astype(str).str.lower().isin(["unknown", "", "none", "nan"])


def _counts(values: pd.Series) -> dict[str, int]:
    return {str(k): int(v) for k, v in values.value_counts().items()}


def abstentions(table: pd.DataFrame) -> list[Abstention]:
    """One :class:`Abstention` per class attribute the table has a column for."""
    out = []
    for name, (col, reason_col) in ATTRIBUTES.items():
        if col not in table:
            continue
        unknown = _unknown(table[col])
        reasons = table.loc[unknown, reason_col].fillna(NO_REASON) if reason_col in table \
            else pd.Series(NO_REASON, index=table.index[unknown])
        reasons = reasons.astype(str).where(reasons.astype(str).str.len() > 0, NO_REASON)
        out.append(Abstention(name, int((~unknown).sum()), int(unknown.sum()), _counts(reasons)))
    if "structure" in table:
        unknown = _unknown(table["structure"])
        if "structure_source" in table:
            sources = _counts(table.loc[~unknown, "structure_source"].fillna(NO_REASON).astype(str))
        elif "fallback" in table:
            default = table["fallback"].fillna("").astype(str).str.contains("structure_default")
            sources = {k: v for k, v in {
                "default (structure_default)": int((default & ~unknown).sum()),
                "roof / façade class lookup": int((~default & ~unknown).sum())}.items() if v}
        else:
            sources = {}
        reason_col = "structure_unknown_reason"
        reasons = _counts(table.loc[unknown, reason_col].fillna(NO_REASON).astype(str)) \
            if reason_col in table else ({NO_REASON: int(unknown.sum())} if unknown.any() else {})
        out.append(Abstention("structure", int((~unknown).sum()), int(unknown.sum()), reasons, sources))
    return out


def abstention_md(rows: list[Abstention]) -> str:
    """A Markdown table: attribute, kept, unknown, the unknowns by reason, the sources."""
    if not rows:
        return ""
    lines = ["| attribute | kept | unknown | unknown by reason | kept by source |", "|---|---:|---:|---|---|"]
    for r in rows:
        reasons = "; ".join(f"{k}: {v}" for k, v in r.reasons.items()) or "–"
        sources = "; ".join(f"{k}: {v}" for k, v in r.sources.items()) or "–"
        lines.append(f"| {r.attribute} | {r.kept} | {r.unknown} | {reasons} | {sources} |")
    return "\n".join(lines) + "\n"
