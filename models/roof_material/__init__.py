"""Roof-material classifier (EfficientNet-Lite0 on roof chips); see MODEL_CARD.md."""
