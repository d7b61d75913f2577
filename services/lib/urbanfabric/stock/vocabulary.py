"""The vocabulary of the material-intensity table: function and structure classes (RASMI),
pseudo-keys, and the percentile levels a table carries."""

from __future__ import annotations

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
#: The materials of the shipped RASMI tables: each becomes ``mass_<material>_kg`` columns of the
#: buildings table (urbanfabric.outputs.schema declares them; a table with another material
#: fails there rather than writing an undeclared column).
MATERIALS: tuple[str, ...] = ("aluminum", "brick", "concrete", "copper", "glass", "plastics", "steel", "wood")
#: Residential of unknown type: split by floors (see ``estimate_stock``).
RESIDENTIAL_UNKNOWN = "RES"
#: Pseudo-region: equal-weight mixture of every region of the table.
GLOBAL_REGION = "GLOBAL"
#: Percentile columns of the deterministic estimate, in output order.
QUANTILES: tuple[str, ...] = ("p05", "p50", "p95")
#: Percentile columns a table may carry and their probability levels. p05, p50 and p95 are
#: required; missing inner ones are interpolated, missing ends extrapolated (see
#: :meth:`MaterialIntensityTable._quantile_cube`).
LEVELS: dict[str, float] = {"p00": 0.0, "p05": 0.05, "p25": 0.25, "p50": 0.5, "p75": 0.75,
                            "p95": 0.95, "p100": 1.0}
