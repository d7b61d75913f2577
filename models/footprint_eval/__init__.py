"""Evaluation of footprint models (pixel and SpaceNet instance metrics) per data set and split."""
