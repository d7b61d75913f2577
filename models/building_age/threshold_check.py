"""Does a decision threshold on the age-class probabilities beat the majority class?

Experiment behind docs/results.md (age section), not used by the shipped model::

    PYTHONPATH=.:services/lib nice -n 10 .venv/bin/python -m models.building_age.threshold_check

Per split seed: the threshold t (predict a non-majority class only when its probability > t)
that maximises accuracy on inner validation blocks of the training part is applied to the
held-out blocks; 1 member, class weights (n_c)^-0.25.
"""

import geopandas as gpd
import numpy as np
from urbanfabric.attributes.age import AgeModel, age_class
from urbanfabric.attributes.features import footprint_features

from models.building_age.train import BOULDER, DEFAULT_DATA, class_metrics
from models.height_xgb.train import spatial_block_split

gdf = gpd.read_file(DEFAULT_DATA / BOULDER)
y = gdf.year_built.to_numpy(float); X = footprint_features(gdf)
for seed in (0, 1, 2):
    test, _ = spatial_block_split(gdf, 500.0, 0.2, seed)
    # inner validation blocks from the training part
    tr_idx = np.flatnonzero(~test)
    inner, _ = spatial_block_split(gdf.iloc[tr_idx], 500.0, 0.2, 100 + seed)
    fit_rows, val_rows = tr_idx[~inner], tr_idx[inner]
    m = AgeModel(0.25).fit(X.iloc[fit_rows], y[fit_rows], n_models=1, seed=0)
    _, _, _, pv = m.predict(X.iloc[val_rows]); cv = age_class(y[val_rows])
    best = (np.mean(cv == 0), 1.01)
    for t in np.linspace(0.3, 0.95, 27):
        pred = np.where(pv[:, 1:].max(1) > t, 1 + pv[:, 1:].argmax(1), 0)
        a = np.mean(pred == cv)
        if a > best[0]: best = (a, t)
    full = AgeModel(0.25).fit(X[~test], y[~test], n_models=1, seed=0)
    _, _, _, pt = full.predict(X[test]); ct = age_class(y[test])
    t = best[1]
    pred = np.where(pt[:, 1:].max(1) > t, 1 + pt[:, 1:].argmax(1), 0)
    cm = class_metrics(ct, pred); maj = np.mean(ct == np.bincount(age_class(y[~test])).argmax())
    print(seed, 'thr', round(t, 3), 'val acc', round(best[0], 4), 'test acc', round(cm['accuracy'], 4), 'macroF1', round(cm['macro_f1'], 3), 'argmax acc', round(np.mean(pt.argmax(1) == ct), 4), 'majority', round(maj, 4))
