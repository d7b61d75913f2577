"""Test-time augmentation (TTA) of a segmentation patch model.

Buildings seen from above have no preferred orientation, so a window flipped or rotated is an
equally valid input. :func:`with_tta` predicts each window under several such views, turns the
answers back and averages them: a cheap ensemble of one model, and an output that follows the
image when it is flipped (the average over a symmetry group is equivariant to it). ``flips`` uses
4 views (identity, left-right, up-down, both), ``d4`` all 8 symmetries of the square.

Kept apart from :mod:`urbanfabric.segmentation` (numpy only) because the TTA choice travels in
protobuf messages converted by :mod:`urbanfabric.convert`, which every service image imports.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum

import numpy as np

from urbanfabric.errors import InvalidInput

PatchModel = Callable[[np.ndarray], np.ndarray]
"""(N, 3, h, w) float32 in 0–1 → (N, h, w) building probability."""


class TTA(str, Enum):
    """Test-time augmentation of a patch model (the views each window is predicted under)."""

    NONE = "none"
    FLIPS = "flips"  # identity, left-right, up-down, both (= 180° rotation)
    D4 = "d4"  # the 8 symmetries of the square: 4 rotations × optional transpose

    @classmethod
    def parse(cls, value: str | "TTA" | None) -> "TTA":
        """``TTA`` from a name; empty or None means :attr:`NONE`."""
        if isinstance(value, cls):
            return value
        try:
            return cls((value or "none").strip().lower())
        except ValueError:
            raise InvalidInput("tta", f"unknown {value!r}; one of {', '.join(m.value for m in cls)}") from None

    @property
    def views(self) -> int:
        return len(_VIEWS[self])


# A view is (transpose, k rotations of 90°) applied to the last two axes; D4 = all 8 of them.
_VIEWS: dict[TTA, tuple[tuple[bool, int], ...]] = {
    TTA.NONE: ((False, 0),),
    # up-down flip = transpose then rotate by 90°; left-right = transpose then rotate by 270°.
    TTA.FLIPS: ((False, 0), (True, 1), (True, 3), (False, 2)),
    TTA.D4: tuple((t, k) for t in (False, True) for k in range(4)),
}


def _forward(x: np.ndarray, transpose: bool, k: int) -> np.ndarray:
    if transpose:
        x = np.swapaxes(x, -1, -2)
    return np.rot90(x, k, axes=(-2, -1))


def _inverse(x: np.ndarray, transpose: bool, k: int) -> np.ndarray:
    x = np.rot90(x, -k, axes=(-2, -1))
    return np.swapaxes(x, -1, -2) if transpose else x


def with_tta(model: PatchModel, tta: TTA | str) -> PatchModel:
    """``model`` under test-time augmentation: the mean probability over the views of ``tta``.

    Each view is one call of ``model`` with the same batch size, so memory per call does not
    grow; the cost is ``tta.views`` times the model time. Rotations need square windows, which
    :func:`predict_tiled` always cuts.
    """
    tta = TTA.parse(tta)
    if tta is TTA.NONE:
        return model
    views = _VIEWS[tta]

    def augmented(batch: np.ndarray) -> np.ndarray:
        if batch.shape[-1] != batch.shape[-2]:
            raise InvalidInput("tta", f"needs square windows, got {batch.shape[-2:]}")
        total = None
        for transpose, k in views:
            view = np.ascontiguousarray(_forward(batch, transpose, k))
            prob = _inverse(np.asarray(model(view), dtype=np.float32), transpose, k)
            total = prob if total is None else total + prob
        return np.ascontiguousarray(total / len(views))

    return augmented
