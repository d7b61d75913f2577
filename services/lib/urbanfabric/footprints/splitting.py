"""Buildings merged in the mask, split where the probability map shows a gap between them.

At the cut, two houses whose walls touch (or whose roofs blur together) become one connected
component. The probability usually still dips between them, so each building keeps a **core**
of confident pixels (probability at least halfway from the cut to 1, and not on the mask's
edge). A component holding two or more cores large enough to be buildings is split by a
watershed (:func:`scipy.ndimage.watershed_ift`) on ``1 − probability`` flooded from the cores:
the line between two buildings follows the valley of the probability. Components with one core
or none are left whole.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: Core pixels lie at least this far inside the mask (pixels), so one-pixel bridges never seed a core.
CORE_INSET_PX = 1.5


def core_cut(threshold: float) -> float:
    """Probability of a core pixel: halfway from the mask's cut to 1."""
    return threshold + (1.0 - threshold) / 2


def split_touching(prob: np.ndarray, threshold: float, min_core_px: int) -> tuple[np.ndarray, int]:
    """Label the building mask, splitting components that hold several cores.

    Args:
        prob: ``(H, W)`` building probability (NaN = no data, never building).
        threshold: the mask's cut (``prob >= threshold`` is building).
        min_core_px: smallest core (pixels) that seeds a building of its own.

    Returns:
        ``(labels, n)``: int32 labels 1..n, 0 outside the mask; every label is 4-connected
        inside one component of the mask.
    """
    p = np.nan_to_num(np.asarray(prob, dtype=np.float32), nan=0.0)
    mask = p >= threshold
    components, n = ndimage.label(mask)
    if n == 0:
        return components.astype(np.int32), 0
    inside = ndimage.distance_transform_edt(mask) >= CORE_INSET_PX
    cores, m = ndimage.label(mask & inside & (p >= core_cut(threshold)))
    if m < 2:
        return components.astype(np.int32), n
    size = np.bincount(cores.ravel(), minlength=m + 1)
    big = size >= max(1, min_core_px)
    big[0] = False
    cores = np.where(big[cores], cores, 0)
    # Components with two or more big cores are the ones to split.
    owner = np.zeros(m + 1, dtype=np.int64)
    idx = np.flatnonzero(cores.ravel())
    owner[cores.ravel()[idx]] = components.ravel()[idx]
    per_component = np.bincount(owner[np.flatnonzero(big)], minlength=n + 1)
    split = per_component >= 2
    split[0] = False
    if not split.any():
        return components.astype(np.int32), n
    region = split[components]
    markers = np.where(region, cores, 0).astype(np.int32)
    # The flood's path cost is the highest cost along it: background (cost 65535) is never a
    # shortcut from one component into another, so each component's pixels go to its own cores.
    cost = np.round((1.0 - np.clip(p, 0, 1)) * 65535).astype(np.uint16)
    flooded = ndimage.watershed_ift(cost, markers).astype(np.int64)
    # (component, core) pairs name the split buildings, so a label never spans two components;
    # the other components keep their labels (only the split region is relabelled: cheaper).
    where = np.flatnonzero(region.ravel())
    key = components.ravel()[where].astype(np.int64) * (m + 1) + flooded.ravel()[where]
    uniq, inverse = np.unique(key, return_inverse=True)
    labels = components.astype(np.int32)
    labels.ravel()[where] = n + 1 + inverse.astype(np.int32)
    # Consecutive labels: the split components' own numbers are gone.
    used = np.zeros(n + len(uniq) + 1, bool)
    used[labels.ravel()] = True
    used[0] = False
    lookup = np.zeros(len(used), np.int32)
    lookup[used] = np.arange(1, int(used.sum()) + 1, dtype=np.int32)
    return lookup[labels], int(used.sum())
