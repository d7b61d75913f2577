"""Test-time augmentation (TTA) of a segmentation patch model.

Buildings seen from above have no preferred orientation, so a window flipped or rotated is an
equally valid input. :func:`with_tta` predicts each window under several such views, turns the
answers back and averages them: a cheap ensemble of one model, and an output that follows the
image when it is flipped (the average over a symmetry group is equivariant to it). ``flips`` uses
4 views (identity, left-right, up-down, both), ``d4`` all 8 symmetries of the square.
``d4-zoom`` adds scale: the 8 views at the native resolution and again with the window magnified
1.25× (bilinear), each answer resized back; on the val splits this lifted the small villas of
Dubai most (docs/results.md, issue 3, "Update, session 5").

Kept apart from :mod:`urbanfabric.footprints.polygons` (numpy only) because the TTA choice travels in
protobuf messages converted by :mod:`urbanfabric.runtime.convert`, which every service image imports.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum

import numpy as np

from urbanfabric.errors import InvalidInput, parse_choice

PatchModel = Callable[[np.ndarray], np.ndarray]
"""(N, 3, h, w) float32 in 0–1 → (N, h, w) building probability."""


class TTA(str, Enum):
    """Test-time augmentation of a patch model (the views each window is predicted under)."""

    NONE = "none"
    FLIPS = "flips"  # identity, left-right, up-down, both (= 180° rotation)
    D4 = "d4"  # the 8 symmetries of the square: 4 rotations × optional transpose
    D4_ZOOM = "d4-zoom"  # D4 at the native scale and magnified ×1.25 (16 model calls)

    @classmethod
    def parse(cls, value: str | TTA | None) -> TTA:
        """``TTA`` from a name; empty or None means :attr:`NONE`."""
        return parse_choice(cls, value, field="tta", default=cls.NONE)

    @property
    def views(self) -> int:
        """Model calls per window."""
        return len(_VIEWS[self]) * len(_ZOOMS[self])


# A view is (transpose, k rotations of 90°) applied to the last two axes; D4 = all 8 of them.
_VIEWS: dict[TTA, tuple[tuple[bool, int], ...]] = {
    TTA.NONE: ((False, 0),),
    # up-down flip = transpose then rotate by 90°; left-right = transpose then rotate by 270°.
    TTA.FLIPS: ((False, 0), (True, 1), (True, 3), (False, 2)),
    TTA.D4: tuple((t, k) for t in (False, True) for k in range(4)),
}
_VIEWS[TTA.D4_ZOOM] = _VIEWS[TTA.D4]

#: Window magnifications each set of views is predicted at (1.0 = as given). 1.25 was chosen on
#: the val splits against 0.75 and 1.5 (each alone loses; the mean with 1.0 at 1.25 gained most).
_ZOOMS: dict[TTA, tuple[float, ...]] = {t: (1.0,) for t in TTA} | {TTA.D4_ZOOM: (1.0, 1.25)}


def _forward(x: np.ndarray, transpose: bool, k: int) -> np.ndarray:
    if transpose:
        x = np.swapaxes(x, -1, -2)
    return np.rot90(x, k, axes=(-2, -1))


def _inverse(x: np.ndarray, transpose: bool, k: int) -> np.ndarray:
    x = np.rot90(x, -k, axes=(-2, -1))
    return np.swapaxes(x, -1, -2) if transpose else x


def _resize_axis(x: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Linear resampling of one axis to ``size`` samples, pixel centres aligned, edges clamped."""
    n = x.shape[axis]
    src = np.clip((np.arange(size) + 0.5) * (n / size) - 0.5, 0, n - 1)
    lo = np.floor(src).astype(np.intp)
    hi = np.minimum(lo + 1, n - 1)
    shape = [1] * x.ndim
    shape[axis] = size
    w = (src - lo).astype(np.float32).reshape(shape)
    return np.take(x, lo, axis=axis) * (1 - w) + np.take(x, hi, axis=axis) * w


def _zoom(x: np.ndarray, size: int) -> np.ndarray:
    """Resize the last two axes of a square stack to ``size``² (bilinear, pixel centres aligned).

    Plain numpy (two separable linear passes) rather than SciPy or torch: this module is imported
    by :mod:`urbanfabric.runtime.convert` in every service image, which carry neither.
    """
    x = np.nan_to_num(np.asarray(x, dtype=np.float32))
    return _resize_axis(_resize_axis(x, size, x.ndim - 2), size, x.ndim - 1).astype(np.float32, copy=False)


def with_tta(model: PatchModel, tta: TTA | str) -> PatchModel:
    """``model`` under test-time augmentation: the mean probability over the views of ``tta``.

    Each view is one call of ``model`` with the same batch size; at the native scale memory per
    call does not grow, a magnified window (``d4-zoom``) has 1.25² the pixels. The cost is
    ``tta.views`` model calls per window. Rotations need square windows, which
    :func:`predict_tiled` always cuts.
    """
    tta = TTA.parse(tta)
    if tta is TTA.NONE:
        return model
    views, zooms = _VIEWS[tta], _ZOOMS[tta]

    def augmented(batch: np.ndarray) -> np.ndarray:
        if batch.shape[-1] != batch.shape[-2]:
            raise InvalidInput("tta", f"needs square windows, got {batch.shape[-2:]}")
        side = batch.shape[-1]
        total: np.ndarray | None = None
        for zoom in zooms:
            scaled = batch if zoom == 1.0 else _zoom(batch, round(side * zoom))
            part: np.ndarray | None = None
            for transpose, k in views:
                view = np.ascontiguousarray(_forward(scaled, transpose, k))
                prob = _inverse(np.asarray(model(view), dtype=np.float32), transpose, k)
                part = prob if part is None else part + prob
            # Resizing is linear: the views' sum goes back to the window size once per zoom.
            if part is None:  # no views: with_tta always has at least the identity
                raise InvalidInput("tta", "has no views")
            part = part if zoom == 1.0 else _zoom(part, side)
            total = part if total is None else total + part
        if total is None:
            raise InvalidInput("tta", "has no zoom levels")
        return np.ascontiguousarray(total / (len(views) * len(zooms)))

    return augmented
