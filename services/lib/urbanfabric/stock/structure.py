"""Structure type of a building (RASMI's C, M, S, T) with probabilities.

:class:`StructureModel` gives P(reinforced concrete, masonry, steel, timber) from what the
pipeline knows of a building — floors, RASMI function, construction year, region — learnt
from material-intensity records that carry a structure (Heeren & Fishman 2019; EU-ECB), with
two documented layers on top:

* literature caps (:data:`HEIGHT_CAPS`): unreinforced masonry above 8 storeys and timber above
  6 are rare everywhere (China's seismic code GB 50011 §7.1.2 limits masonry to 7 storeys /
  21 m; mid-rise timber is a recent niche) — their probabilities are capped and the rest
  renormalised;
* observed materials as evidence (a likelihood ratio, not an override): a façade class
  multiplies the odds of the structure it implies (:data:`FACADE_TO_STRUCTURE`) by
  :data:`FACADE_LIKELIHOOD_RATIO`, a roof class (:data:`ROOF_TO_STRUCTURE`, a weak hint) by
  :data:`ROOF_LIKELIHOOD_RATIO`.

The roof lookup it replaces (:func:`structure_from_roof`) stays for :class:`KeyMapping` users
who map their own classes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from urbanfabric.errors import InvalidInput
from urbanfabric.stock.vocabulary import STRUCTURES


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
#: Facade material (``facades/nyc`` and ``facades/tokyo`` classes) to RASMI structure. Walls
#: are closer to the structure than roofs: load-bearing brick and stone are masonry, siding
#: and timber cladding sit on timber frames, metal cladding on steel frames. Stucco (render)
#: hides the wall behind it; masonry is the commoner case.
FACADE_TO_STRUCTURE: dict[str, str] = {
    "brick": "M",
    "rustication": "M",
    "stucco": "M",
    "siding": "T",
    "wood": "T",
    "metal": "S",
}
#: Structure used for classes not in the mapping (including ``other``).
ROOF_FALLBACK_STRUCTURE = "M"


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


#: Structure classes, in the order of every probability array here.
STRUCTURE_CLASSES: tuple[str, ...] = ("C", "M", "S", "T")
#: (floors above, class, most probability) — literature caps applied after the model.
HEIGHT_CAPS: tuple[tuple[float, str, float], ...] = (
    (8, "M", 0.02), (12, "M", 0.005), (6, "T", 0.02), (12, "T", 0.005))
#: Odds multiplier for the structure a façade class implies (walls are seen, not guessed).
FACADE_LIKELIHOOD_RATIO = 3.0
#: Odds multiplier for the structure a roof-material class hints at (a covering says little).
ROOF_LIKELIHOOD_RATIO = 1.5
#: Function categories of the design matrix ("" = unknown).
FUNCTION_LEVELS: tuple[str, ...] = ("RS", "RM", "RES", "NR", "")
#: Construction-period bins (upper bounds, exclusive) of the design matrix.
YEAR_EDGES: tuple[float, ...] = (1945, 1980, 2000)
#: RASMI R5 macro-regions (the prefix of an R5_32 code).
MACRO_REGIONS: tuple[str, ...] = ("OECD", "ASIA", "LAM", "MAF", "REF")


def design_matrix(floors: Any, function: Any, year: Any, region: Any) -> tuple[np.ndarray, list[str]]:
    """The model's features: log floors (0 and a flag when unknown), function one-hot, year
    bin one-hot (unknown its own), R5 macro-region one-hot (unknown: all zero)."""
    fl = np.asarray(floors, dtype=float)
    n = len(fl)
    known = np.isfinite(fl) & (fl > 0)
    cols = [np.where(known, np.log(np.where(known, fl, 1.0)), 0.0), (~known).astype(float)]
    names = ["log_floors", "floors_unknown"]
    fn = np.asarray([str(f) if f in FUNCTION_LEVELS else "" for f in np.asarray(function, dtype=object)])
    for level in FUNCTION_LEVELS[:-1]:
        cols.append((fn == level).astype(float))
        names.append(f"function_{level}")
    yr = np.asarray(year, dtype=float)
    bins = np.digitize(np.where(np.isfinite(yr), yr, 0.0), YEAR_EDGES)
    for b in range(len(YEAR_EDGES) + 1):
        cols.append((np.isfinite(yr) & (bins == b)).astype(float))
        names.append(f"year_bin_{b}")
    macro = np.asarray([str(r).split("_")[0] for r in np.asarray(region, dtype=object)])
    for m in MACRO_REGIONS:
        cols.append((macro == m).astype(float))
        names.append(f"region_{m}")
    return (np.column_stack(cols) if n else np.zeros((0, len(names)))), names


@dataclass(frozen=True)
class StructureModel:
    """Multinomial logistic model of the structure class, with caps and evidence (module doc)."""

    coef: np.ndarray  # (classes, features)
    intercept: np.ndarray  # (classes,)
    features: list[str]
    #: Logits are divided by it before the softmax (temperature scaling, Guo et al. 2017):
    #: > 1 softens over-confident probabilities. Chosen on place-held-out predictions
    #: (``models/structure_type/calibrate.py``); 1 = the fitted model as is.
    temperature: float = 1.0

    @classmethod
    def load(cls, folder: str | Path) -> StructureModel:
        """From a version folder: ``classifier.json`` (its own, or in the repository tree the
        file of the version its registry entry names in ``weights_from``) and, when present,
        the ``temperature`` of its ``config.json``.

        Raises:
            NotFound: no ``classifier.json``.
            InvalidInput: its classes or features are not this code's, or the temperature is
                not a finite number > 0.
        """
        from urbanfabric.io.model_registry import weights_path

        path = weights_path(folder, "classifier.json")
        doc = json.loads(path.read_text())
        if tuple(doc.get("classes", ())) != STRUCTURE_CLASSES:
            raise InvalidInput("structure_model", f"{path}: classes {doc.get('classes')} are not {STRUCTURE_CLASSES}")
        config = Path(folder) / "config.json"
        temperature = json.loads(config.read_text()).get("temperature", 1.0) if config.is_file() else 1.0
        if not isinstance(temperature, int | float) or not np.isfinite(temperature) or temperature <= 0:
            raise InvalidInput("structure_model.temperature", f"{config}: {temperature!r} is not a number > 0")
        model = cls(np.asarray(doc["coef"], float), np.asarray(doc["intercept"], float), list(doc["features"]),
                    float(temperature))
        if model.features != design_matrix([1.0], [""], [np.nan], [""])[1]:
            raise InvalidInput("structure_model", f"{path}: features differ from this code's design matrix")
        return model

    def to_dict(self) -> dict[str, Any]:
        return {"classes": list(STRUCTURE_CLASSES), "features": self.features,
                "coef": self.coef.round(6).tolist(), "intercept": self.intercept.round(6).tolist()}

    def predict_proba(self, floors: Any, function: Any, year: Any, region: Any,
                      roof: Sequence[str] | None = None, facade: Sequence[str] | None = None) -> np.ndarray:
        """P(C, M, S, T) per building: the model (its logits over :attr:`temperature`), the
        literature caps, then material evidence.

        Unknown inputs (NaN floors or year, "" function or region, "" / "unknown" materials)
        leave the model's prior for what is known; nothing is ever set to certainty.
        """
        X, _ = design_matrix(floors, function, year, region)
        z = (X @ self.coef.T + self.intercept) / self.temperature
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        p = apply_height_caps(p, np.asarray(floors, dtype=float))
        for classes, mapping, ratio in ((roof, ROOF_TO_STRUCTURE, ROOF_LIKELIHOOD_RATIO),
                                        (facade, FACADE_TO_STRUCTURE, FACADE_LIKELIHOOD_RATIO)):
            if classes is None:
                continue
            hinted = [mapping.get(str(c).strip().lower(), "") for c in classes]
            lr = np.ones_like(p)
            for i, code in enumerate(hinted):
                if code:
                    lr[i, STRUCTURE_CLASSES.index(code)] = ratio
            p = p * lr
            p /= p.sum(axis=1, keepdims=True)
        # The evidence must not undo the caps (a brick façade on a 30-storey tower is cladding).
        return apply_height_caps(p, np.asarray(floors, dtype=float))


def apply_height_caps(p: np.ndarray, floors: np.ndarray) -> np.ndarray:
    """Cap masonry and timber above the :data:`HEIGHT_CAPS` floor counts; what the capped
    classes lose goes to the uncapped ones in proportion (rows sum to 1)."""
    p = p.copy()
    cap = np.ones_like(p)
    for above, code, most in HEIGHT_CAPS:
        rows = np.isfinite(floors) & (floors > above)
        j = STRUCTURE_CLASSES.index(code)
        cap[rows, j] = np.minimum(cap[rows, j], most)
    over = p > cap
    rows = over.any(axis=1)
    if rows.any():
        q, c, o = p[rows], cap[rows], over[rows]
        excess = np.where(o, q - c, 0.0).sum(axis=1)
        free = np.where(o | (c < 1), 0.0, q)  # classes without a cap here take the excess
        q = np.where(o, c, q) + free / free.sum(axis=1, keepdims=True) * excess[:, None]
        p[rows] = q
    return p

