"""Structure type of a building for the intensity lookup: a prior from its roof or façade class.

A crude prior (issue 18 replaces it with a model): the roof or façade material implies a
likely load-bearing structure; anything unknown falls back to masonry.
"""

from __future__ import annotations

from collections.abc import Mapping


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
