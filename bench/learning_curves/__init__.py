"""Learning curves of the learning loop: uncertainty-selected vs random-selected labels (issue 21, item 5).

One module per attribute builds an :class:`~bench.learning_curves.core.Experiment` (the served
parent, a pool of "the user's labels" from a place the parent did not train on, a spatially
separate test set); :mod:`bench.learning_curves.core` runs both selection arms over the label
budgets and seeds with the attribute's own ``fine_tune(parent, rows, seed)``.
"""
