"""Blended window inference: any patch model over a whole tile, without seams at window borders.

:func:`predict_tiled` runs the model over overlapping windows and blends them with a smooth
weight (Global Building Map, "Inference"). The model is a plain callable
(:data:`urbanfabric.footprints.tta.PatchModel`): the service passes one that calls the model
server, possibly wrapped in test-time augmentation (:func:`urbanfabric.footprints.tta.with_tta`);
tests pass a fake.
"""

from __future__ import annotations



import numpy as np

from urbanfabric.errors import InvalidInput
from urbanfabric.footprints.tta import PatchModel


def _window_weight(size: int) -> np.ndarray:
    """2-D blending weight: high in the window centre, small but non-zero at its edges."""
    ramp = np.hanning(size + 2)[1:-1].astype(np.float32)
    w = np.outer(ramp, ramp)
    return np.maximum(w, 1e-3)


def _starts(length: int, window: int, stride: int) -> list[int]:
    if length <= window:
        return [0]
    starts = list(range(0, length - window, stride))
    starts.append(length - window)
    return starts


def predict_tiled(
    image: np.ndarray,
    model: PatchModel,
    window: int = 512,
    overlap: int = 128,
    batch_size: int = 4,
) -> np.ndarray:
    """Building probability of a whole ``(3, H, W)`` image from overlapping windows.

    Args:
        image: ARD, float32 0–1; NaN (nodata) is fed to the model as 0 and stays NaN.
        model: patch model; windows are ``window`` pixels square (must suit the model,
            e.g. a multiple of 32 for a U-Net).
        window: window side in pixels.
        overlap: pixels shared by neighbouring windows; blended with a Hann weight.
        batch_size: windows per model call.

    Returns:
        ``(H, W)`` float32 probability, NaN where the input was nodata.
    """
    if image.ndim != 3:
        raise InvalidInput("image", f"expected (bands, rows, cols), got {image.shape}")
    _, rows, cols = image.shape
    nodata = np.isnan(image).all(axis=0)
    filled = np.nan_to_num(image, nan=0.0).astype(np.float32)
    # Pad small images up to one window so every call has the model's shape.
    pr, pc = max(window - rows, 0), max(window - cols, 0)
    if pr or pc:
        filled = np.pad(filled, ((0, 0), (0, pr), (0, pc)), mode="reflect")
    H, W = filled.shape[1:]
    stride = window - overlap
    weight = _window_weight(window)
    acc = np.zeros((H, W), np.float32)
    norm = np.zeros((H, W), np.float32)
    windows = [(r, c) for r in _starts(H, window, stride) for c in _starts(W, window, stride)]
    for i in range(0, len(windows), batch_size):
        chunk = windows[i : i + batch_size]
        batch = np.stack([filled[:, r : r + window, c : c + window] for r, c in chunk])
        probs = np.asarray(model(batch), dtype=np.float32)
        if probs.shape != (len(chunk), window, window):
            raise InvalidInput("model", f"returned shape {probs.shape} for {batch.shape}")
        for (r, c), p in zip(chunk, probs):
            acc[r : r + window, c : c + window] += p * weight
            norm[r : r + window, c : c + window] += weight
    prob = (acc / norm)[:rows, :cols]
    prob[nodata] = np.nan
    return prob
