"""How spread and how uncertain a review package is, against the plain top-n (issue 21).

    PYTHONPATH=.:services/lib .venv/bin/python -m bench.review_spread out/<job> --attribute roof_shape --n 20

For an exported job: the package's picks (urbanfabric.outputs.review) and the plain n least
certain — their lowest uncertainty, the median distance from a pick to its nearest other pick,
and the share of picks in the busiest cell of a 4 × 4 grid over the job.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd

from urbanfabric.io.model_repository import model_config
from urbanfabric.outputs.review import review_attribute, score_rows, with_ood_rank
from urbanfabric.outputs.review_package import folder_parts, select_for_review


def describe(points: gpd.GeoSeries, bounds: np.ndarray, uncertainty: pd.Series) -> str:
    xy = np.c_[points.x, points.y]
    d = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    x0, y0, x1, y1 = bounds
    cx = np.minimum(((xy[:, 0] - x0) / max(x1 - x0, 1e-9) * 4).astype(int), 3)
    cy = np.minimum(((xy[:, 1] - y0) / max(y1 - y0, 1e-9) * 4).astype(int), 3)
    busiest = np.bincount(cy * 4 + cx, minlength=16).max() / len(xy)
    return (f"lowest uncertainty {uncertainty.min():.3f}, median nearest-pick distance "
            f"{np.median(d.min(1)):.0f} m, busiest 4×4 cell {busiest:.0%}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("job", type=Path)
    p.add_argument("--attribute", default="roof_shape")
    p.add_argument("--n", type=int, default=20)
    args = p.parse_args()
    attribute = review_attribute(args.attribute)
    parts = folder_parts(args.job)
    table = pd.concat(list(parts()), ignore_index=True)
    utm = gpd.GeoDataFrame(table, geometry="geometry", crs="EPSG:4326").estimate_utm_crs()
    centres = gpd.GeoSeries(table.geometry, crs="EPSG:4326").representative_point().to_crs(utm)
    bounds = centres.total_bounds
    scored = with_ood_rank(score_rows(table, attribute))
    top = scored.nlargest(args.n, "uncertainty", keep="first")
    sel = select_for_review(parts, attribute, args.n, model_config)
    picked = table["building_id"].astype(str).isin(sel.buildings["building_id"])
    print(f"{args.job.name}: {len(table)} buildings, {attribute.name}, n = {args.n}")
    print(f"  plain top-n: {describe(centres.loc[top.index], bounds, top['uncertainty'])}")
    print(f"  package    : {describe(centres[picked.to_numpy()], bounds, sel.buildings['uncertainty'])}")


if __name__ == "__main__":
    main()
