"""Why a classifier chose a class: Grad-CAM, guided backpropagation and guided Grad-CAM.

The three methods of the study's section 2.3, for any class of any image classifier that maps
0–1 chips ``(N, 3, S, S)`` to logits ``(N, C)`` (the contract of ``models/classifiers`` and
``models/roof_material``):

* **Grad-CAM** (Selvaraju et al.): the gradients of the class logit, averaged over each
  feature map of the last convolutional stage, weight those maps; their ReLU'd sum, upsampled
  bilinearly to the chip, is a coarse map of *where* the evidence for the class lies.
* **Guided backpropagation** (Springenberg et al.): the gradient of the class logit with
  respect to the input pixels, where every ReLU passes back only positive gradients of
  positive activations: a sharp map of *which edges and textures* excite the class.
* **Guided Grad-CAM**: the product of the two: textures, but only inside the Grad-CAM region.

The attribution work is done by `captum <https://captum.ai>`_ (``LayerGradCam``,
``GuidedBackprop``, ``GuidedGradCam``). Two things captum cannot do by itself are added here:

* captum's guided backpropagation overrides gradients only of ``torch.nn.ReLU`` modules. The
  shipped EfficientNet-Lite0 and MobileNetV2 use ``ReLU6``, which captum would leave unguided
  (plain gradients, silently). :func:`guidable` therefore runs on a deep copy of the model in
  which every ``ReLU6`` becomes :class:`_GuidedReLU6` — a ``ReLU`` subclass computing
  ``relu6`` — so captum's hook applies the guided rule ``relu(grad · 1[0 < x < 6])``; every
  activation is also made non-inplace (backward hooks reject in-place outputs). Activations
  without a guided rule (SiLU, Hardswish) stay as they are, and the number left unguided is
  reported in :attr:`Explanation.unguided_activations`.
* The Grad-CAM layer: the classifier code's ``target_layer(model)`` when that library knows the
  model; otherwise :func:`last_spatial_layer`, the last module (in execution order) whose output
  is still a feature map.

Heatmaps are ``(H, W)`` float32 arrays at chip resolution. Grad-CAM is non-negative by
construction; guided maps are reduced over colour channels with the maximum absolute value
(the usual saliency reduction). :func:`overlay_png` renders a heatmap over the chip as PNG
bytes (matplotlib colormap, PIL encoding).

Explanations need gradients, so they run in-process on a loaded ``torch`` model, not through
the V2 model server (which returns outputs only): see :func:`load_explainable`.
"""

from __future__ import annotations

import copy
import enum
import functools
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from urbanfabric.errors import InvalidInput, NotFound
from urbanfabric.io.model_registry import weights_path
from urbanfabric.io.model_repository import model_module

#: Every shipped classifier (roof material, roof shape, façade material) loads through the same
#: model code; the model repository names it under this kind.
CLASSIFIER_KIND = "roof-material"


class Method(str, enum.Enum):
    """Explanation method (values are the names used on the CLI and in the proto enum)."""

    GRAD_CAM = "gradcam"
    GUIDED_BACKPROP = "guided-backprop"
    GUIDED_GRAD_CAM = "guided-gradcam"


@dataclass(frozen=True)
class Explanation:
    """One explained chip.

    Attributes:
        method: which method produced ``heatmap``.
        target: class index explained.
        target_name: its class name (``str(target)`` when the model has no class names).
        heatmap: ``(H, W)`` float32 attribution at chip resolution (not normalised).
        scores: ``(C,)`` class probabilities of the chip (softmax, or per-label sigmoid for
            multi-label models, after temperature scaling).
        logits: ``(C,)`` raw logits.
        layer: name of the Grad-CAM layer (empty for guided backpropagation).
        unguided_activations: activation modules with no guided-backprop rule (SiLU, …);
            non-zero means the guided map is partly a plain gradient.
    """

    method: Method
    target: int
    target_name: str
    heatmap: np.ndarray
    scores: np.ndarray
    logits: np.ndarray
    layer: str = ""
    unguided_activations: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class _GuidedReLU6(nn.ReLU):
    """``relu6`` that captum's guided backpropagation recognises (it hooks ``nn.ReLU`` only).

    Autograd gives ``grad · 1[0 < x < 6]``; captum's hook then keeps its positive part, which
    is guided backpropagation's rule for a clipped ReLU.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.relu6(x)


#: Activation types with no guided-backpropagation rule: counted, left as they are.
_UNGUIDED = (nn.SiLU, nn.Hardswish, nn.GELU, nn.Mish, nn.Sigmoid, nn.Hardsigmoid, nn.Tanh)


def guidable(model: nn.Module) -> tuple[nn.Module, int]:
    """A deep copy of ``model`` ready for captum's guided backpropagation.

    Every ``ReLU6`` (or ``Hardtanh(0, 6)``) becomes :class:`_GuidedReLU6`, every module with an
    ``inplace`` flag is made non-inplace, the copy is in eval mode and its parameters do not
    require gradients (only the input does).

    Returns:
        ``(copy, unguided)``: the copy and how many activations have no guided rule.
    """
    twin = copy.deepcopy(model).eval()
    for p in twin.parameters():
        p.requires_grad_(False)
    unguided = 0
    for parent in list(twin.modules()):
        for name, child in list(parent.named_children()):
            is_relu6 = isinstance(child, nn.ReLU6) or (
                isinstance(child, nn.Hardtanh) and child.min_val == 0.0 and child.max_val == 6.0
            )
            if is_relu6:
                setattr(parent, name, _GuidedReLU6())
                continue
            if isinstance(child, _UNGUIDED):
                unguided += 1
            if getattr(child, "inplace", False) is True:
                setattr(child, "inplace", False)
    return twin, unguided


def input_channels(model: nn.Module) -> int:
    """Chip channels a classifier takes: 3, or 4 for ``context+mask`` roof chips."""
    mean = getattr(model, "mean", None)
    return int(mean.shape[1]) if isinstance(mean, torch.Tensor) and mean.ndim == 4 else 3


def last_spatial_layer(model: nn.Module, chip_size: int = 64) -> tuple[str, nn.Module]:
    """The last module, in execution order, whose output is a feature map ``(N, C, h, w)``.

    A leaf module producing a 4-D tensor with ``h · w > 1`` wins; pooling to ``1 × 1`` (global
    average pooling) is skipped, as are ``Identity`` pass-throughs. Found by one forward pass of
    a zero chip with forward hooks.

    Raises:
        InvalidInput: the model produces no feature map at all.
    """
    order: list[tuple[str, nn.Module]] = []
    hooks = []
    for name, mod in model.named_modules():
        if next(mod.children(), None) is not None or isinstance(mod, nn.Identity):
            continue

        def record(m: nn.Module, _inp: Any, out: Any, name: str = name) -> None:
            if isinstance(out, torch.Tensor) and out.ndim == 4 and out.shape[2] * out.shape[3] > 1:
                order.append((name, m))

        hooks.append(mod.register_forward_hook(record))
    try:
        with torch.no_grad():
            model(torch.zeros(1, input_channels(model), chip_size, chip_size))
    finally:
        for h in hooks:
            h.remove()
    if not order:
        raise InvalidInput("model", "has no layer with a spatial feature map for Grad-CAM")
    return order[-1]


def _resolve_layer(model: nn.Module, chip_size: int) -> tuple[str, nn.Module]:
    """Grad-CAM layer: the classifier code's ``target_layer`` when it knows the model, else the last map."""
    try:
        target_layer = getattr(model_module(CLASSIFIER_KIND), "target_layer", None)
    except NotFound:
        target_layer = None
    if target_layer is not None:
        try:
            layer = target_layer(model)
        except (KeyError, ValueError, TypeError, AttributeError):
            layer = None
        if isinstance(layer, nn.Module):
            names = {id(m): n for n, m in model.named_modules()}
            return names.get(id(layer), type(layer).__name__), layer
    return last_spatial_layer(model, chip_size)


def probabilities(logits: np.ndarray, multi_label: bool = False, temperature: float = 1.0) -> np.ndarray:
    """Calibrated probabilities of logits ``(..., C)``: softmax, or sigmoid per label.

    Args:
        logits: raw model outputs.
        multi_label: one sigmoid per label instead of a softmax over classes.
        temperature: divides the logits first (temperature scaling); must be > 0.

    Raises:
        InvalidInput: a non-positive temperature.
    """
    if not temperature > 0:
        raise InvalidInput("temperature", f"must be > 0, got {temperature}")
    z = torch.as_tensor(np.asarray(logits, dtype=np.float32)) / float(temperature)
    p = torch.sigmoid(z) if multi_label else torch.softmax(z, dim=-1)
    return p.numpy().astype(np.float32)


def explain(
    model: nn.Module,
    chip: np.ndarray,
    method: Method | str = Method.GRAD_CAM,
    target: int | None = None,
    *,
    classes: list[str] | None = None,
    multi_label: bool = False,
    temperature: float = 1.0,
    layer: nn.Module | None = None,
) -> Explanation:
    """Explain one chip's class ``target`` (default: the top-scoring class).

    Args:
        model: classifier mapping 0–1 chips ``(N, 3, S, S)`` to logits ``(N, C)``; not
            modified (the guided methods run on a copy, see :func:`guidable`).
        chip: ``(3, S, S)`` float array in 0–1 (``(4, S, S)`` for ``context+mask`` models),
            exactly what the classifier is served.
        method: :class:`Method` or its value.
        target: class index to explain; the highest-probability class when omitted.
        classes: class names in logit order (for :attr:`Explanation.target_name`).
        multi_label: scores are per-label sigmoids instead of a softmax.
        temperature: temperature of the calibrated scores (logits are explained unscaled;
            a positive scale does not move any of the three maps' shapes).
        layer: Grad-CAM layer of ``model``; found automatically when omitted.

    Raises:
        InvalidInput: bad chip shape/values, unknown method, or a target out of range.
    """
    from captum.attr import (
        GuidedBackprop,
        GuidedGradCam,
        LayerAttribution,
        LayerGradCam,
    )

    try:
        method = Method(method)
    except ValueError:
        raise InvalidInput("method", f"unknown method {method!r}; use one of {[m.value for m in Method]}") from None
    chip = np.asarray(chip)
    channels = input_channels(model)
    if chip.ndim != 3 or chip.shape[0] != channels or min(chip.shape) < 1:
        raise InvalidInput("chip", f"expected ({channels}, S, S), got shape {chip.shape}")
    if not np.isfinite(chip).all():
        raise InvalidInput("chip", "contains NaN or infinite values")

    was_training = model.training
    model.eval()
    try:
        x = torch.as_tensor(np.ascontiguousarray(chip, dtype=np.float32))[None]
        with torch.no_grad():
            logits = model(x)[0].float().numpy()
        n_classes = logits.shape[-1]
        scores = probabilities(logits, multi_label, temperature)
        if target is None:
            target = int(np.argmax(scores))
        if not 0 <= int(target) < n_classes:
            raise InvalidInput("target", f"class index {target} is outside 0..{n_classes - 1}")
        target = int(target)
        name = classes[target] if classes and target < len(classes) else str(target)

        size = int(chip.shape[-1])
        layer_name = ""
        unguided = 0
        inp = x.clone().requires_grad_(True)
        # All three run on a copy: non-inplace activations (hooks reject in-place outputs),
        # ReLU6 made guidable; Grad-CAM ignores the ReLU override (it takes layer gradients).
        twin, unguided = guidable(model)
        if method is not Method.GUIDED_BACKPROP:
            if layer is None:
                layer_name, twin_layer = _resolve_layer(twin, size)
            else:  # the same module inside the copy
                paths = {id(m): n for n, m in model.named_modules()}
                if id(layer) not in paths:
                    raise InvalidInput("layer", "is not a module of the model")
                layer_name, twin_layer = paths[id(layer)], twin.get_submodule(paths[id(layer)])
        if method is Method.GRAD_CAM:
            cam = LayerGradCam(twin, twin_layer).attribute(inp, target=target, relu_attributions=True)
            up = LayerAttribution.interpolate(cam, tuple(chip.shape[1:]), interpolate_mode="bilinear")
            heat = up[0, 0]
            unguided = 0
        elif method is Method.GUIDED_BACKPROP:
            with warnings.catch_warnings():  # captum announces its ReLU hooks on every call
                warnings.simplefilter("ignore", UserWarning)
                heat = GuidedBackprop(twin).attribute(inp, target=target)[0].abs().amax(dim=0)
        else:
            # bilinear like Grad-CAM above (captum's default is nearest: blocky products).
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                attr = GuidedGradCam(twin, twin_layer).attribute(
                    inp, target=target, interpolate_mode="bilinear"
                )
            heat = attr[0].abs().amax(dim=0)
        heatmap = heat.detach().float().numpy().astype(np.float32)
    finally:
        model.train(was_training)
    return Explanation(method, target, name, heatmap, scores, logits.astype(np.float32),
                       layer_name, unguided)


def normalise(heatmap: np.ndarray, percentile: float = 99.5) -> np.ndarray:
    """Heatmap scaled to 0–1, saturating at its ``percentile`` (an all-zero map stays zero).

    Guided maps are sparse, spiky gradients: scaling by the maximum would leave all but a
    few pixels invisible, so the top half percent saturates instead. For smooth Grad-CAM
    maps the percentile is close to the maximum.
    """
    h = np.nan_to_num(np.asarray(heatmap, dtype=np.float32), nan=0.0)
    h = h - min(float(h.min()), 0.0)
    top = float(np.percentile(h, percentile)) if h.size else 0.0
    top = top if top > 0 else float(h.max(initial=0.0))
    return np.clip(h / top, 0.0, 1.0) if top > 0 else np.zeros_like(h)


def chip_rgb(chip: np.ndarray) -> np.ndarray:
    """``(3, S, S)`` 0–1 chip → ``(S, S, 3)`` uint8 RGB (a footprint channel, if any, is not drawn)."""
    rgb = np.asarray(chip, dtype=np.float32)[:3]
    return (np.clip(np.moveaxis(rgb, 0, -1), 0, 1) * 255 + 0.5).astype(np.uint8)


def overlay(chip: np.ndarray, heatmap: np.ndarray, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """Heatmap blended over the chip: ``(S, S, 3)`` uint8.

    The map is normalised to its own maximum and coloured with a matplotlib colormap; the
    blend weight grows with the heat (``alpha · heat``) so cold areas show the roof itself.
    """
    from matplotlib import colormaps

    rgb = chip_rgb(chip).astype(np.float32) / 255
    h = normalise(heatmap)
    if h.shape != rgb.shape[:2]:
        raise InvalidInput("heatmap", f"shape {h.shape} differs from the chip {rgb.shape[:2]}")
    colour = colormaps[cmap](h)[..., :3]
    w = (alpha * h)[..., None]
    return ((rgb * (1 - w) + colour * w) * 255 + 0.5).astype(np.uint8)


def png_bytes(rgb: np.ndarray, scale: int = 1, colors: int = 0) -> bytes:
    """Encode ``(H, W, 3)`` uint8 as PNG, optionally enlarged ``scale`` times (nearest).

    ``colors`` > 0 quantises to a palette of that many colours (about 3× smaller files, for
    documentation galleries); 0 keeps full RGB.
    """
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), mode="RGB")
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    if colors:
        img = img.quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def overlay_png(chip: np.ndarray, heatmap: np.ndarray, alpha: float = 0.5, scale: int = 1) -> bytes:
    """:func:`overlay` as PNG bytes."""
    return png_bytes(overlay(chip, heatmap, alpha), scale)


def panel_png(chip: np.ndarray, explanations: list[Explanation], scale: int = 1, gap: int = 2,
              colors: int = 256) -> bytes:
    """The chip and one overlay per explanation side by side, as PNG bytes (for reports;
    palette-quantised to ``colors``, 0 = full RGB)."""
    tiles = [chip_rgb(chip)] + [overlay(chip, e.heatmap) for e in explanations]
    h = tiles[0].shape[0]
    sep = np.full((h, gap, 3), 255, np.uint8)
    row = np.concatenate([t for tile in tiles for t in (tile, sep)][:-1], axis=1)
    return png_bytes(row, scale, colors)


# ---- loading shipped models --------------------------------------------------------------

@dataclass(frozen=True)
class Explainable:
    """A shipped classifier loaded for explanations: the torch module and its config."""

    model: nn.Module
    config: dict[str, Any]

    @property
    def classes(self) -> list[str]:
        """Class names in logit order."""
        return list(self.config.get("classes", []))

    @property
    def chip_size(self) -> int:
        """Chip side the model was trained on."""
        return int(self.config.get("chip_size", 128))

    @property
    def multi_label(self) -> bool:
        """One sigmoid per label (façade materials) instead of a softmax."""
        return bool(self.config.get("multi_label", False))

    @property
    def temperature(self) -> float:
        """Temperature-scaling factor fitted on validation data (1 when not calibrated)."""
        return float(self.config.get("temperature", 1.0) or 1.0)

    def target_index(self, name: str) -> int | None:
        """Logit index of class ``name``; None for ``""`` (the predicted class).

        Raises:
            InvalidInput: not one of the model's classes (field ``target_class``).
        """
        if not name:
            return None
        if name not in self.classes:
            raise InvalidInput("target_class", f"{name!r} is not one of {self.classes}")
        return self.classes.index(name)


def load_explainable(version_dir: str | Path) -> Explainable:
    """Load a shipped model folder (``config.json`` + ``model.pt``) as a float32 eval model.

    Loads through the classifier code the model server runs (every shipped classifier, including
    roof-material v1, via :func:`urbanfabric.io.model_repository.model_module`), so the
    explained module is the one that is served. Loaded
    models are cached per folder and weights timestamp (explaining never modifies them).

    Raises:
        NotFound: the folder has no ``config.json`` / ``model.pt``.
    """
    version_dir = Path(version_dir).resolve()
    if not (version_dir / "config.json").is_file():
        raise NotFound(f"model_version: no config.json in {version_dir}")
    # The folder's own model.pt, or the one it reuses (models/registry.yaml: weights_from).
    return _load_cached(str(version_dir), weights_path(version_dir, "model.pt").stat().st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _load_cached(version_dir: str, _mtime_ns: int) -> Explainable:
    model = model_module(CLASSIFIER_KIND).load_model(version_dir)
    return Explainable(model.float().eval(), dict(model.config))
