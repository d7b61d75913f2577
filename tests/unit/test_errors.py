"""``urbanfabric.errors.parse_choice``: the one way a user's name for a choice becomes an enum member."""

from __future__ import annotations

import pytest

from urbanfabric.footprints.ensemble import EnsembleCombine
from urbanfabric.errors import InvalidInput, parse_choice
from urbanfabric.materials.chips import ChipMode
from urbanfabric.footprints.tta import TTA


def test_names_are_read_loosely_and_members_pass_through() -> None:
    assert parse_choice(TTA, " D4-Zoom ", field="tta") is TTA.D4_ZOOM
    assert parse_choice(TTA, TTA.FLIPS, field="tta") is TTA.FLIPS
    assert ChipMode.parse("context+mask") is ChipMode.CONTEXT_MASK


def test_empty_means_the_default_only_where_there_is_one() -> None:
    assert TTA.parse(None) is TTA.NONE and TTA.parse("") is TTA.NONE
    assert EnsembleCombine.parse("  ") is EnsembleCombine.VOTE
    with pytest.raises(InvalidInput) as info:
        ChipMode.parse("")
    assert info.value.field == "chip_mode"


@pytest.mark.parametrize(("parse", "field"), [(TTA.parse, "tta"), (EnsembleCombine.parse, "ensemble_combine"),
                                              (ChipMode.parse, "chip_mode")])
def test_an_unknown_name_names_the_field_and_the_choices(parse, field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse("median")
    assert info.value.field == field
    assert "'median'" in info.value.message and "one of" in info.value.message
