"""Neighbourhood features of footprints: distances to and sizes of the buildings around each one.

Computed in one local metric CRS by :func:`urbanfabric.attributes.features.footprint_features`
(the column list and its meaning are documented there).
"""

from __future__ import annotations

import numpy as np
import shapely
from scipy.spatial import cKDTree


#: Radii (m) of the neighbourhood counts; the largest bounds the single tree query.
NEIGHBOUR_RADII_M: tuple[float, ...] = (50.0, 100.0, 200.0)
#: Footprints closer than this count as adjoining (digitised shared walls rarely coincide).
TOUCH_M = 1.0

#: Query footprints in chunks so the (query, neighbour) pair arrays stay bounded in memory
#: in dense cities (a 200 m radius can hold several hundred neighbours per building).
_CHUNK = 20_000


def pair_distances(
    geoms: np.ndarray, b: np.ndarray, rep: np.ndarray, q: np.ndarray, nb: np.ndarray
) -> np.ndarray:
    """Edge-to-edge distances of pairs (q, nb), exact wherever a caller can tell the difference.

    The callers use distances only through the thresholds TOUCH_M and NEIGHBOUR_RADII_M and
    through each footprint's minimum. The exact distance lies between a lower bound (the gap
    between the bounding boxes) and an upper bound (the distance between points inside each
    polygon); GEOS is asked only for pairs where a threshold falls inside those bounds or that
    could be a nearest neighbour. Other pairs get their upper bound, which sits on the same
    side of every threshold as the exact value and is never below the footprint's minimum.
    On 12k Boulder houses this skips about half of the exact polygon distances.
    """
    gx = np.maximum(0.0, np.maximum(b[nb, 0] - b[q, 2], b[q, 0] - b[nb, 2]))
    gy = np.maximum(0.0, np.maximum(b[nb, 1] - b[q, 3], b[q, 1] - b[nb, 3]))
    lower = np.hypot(gx, gy)
    upper = np.hypot(rep[q, 0] - rep[nb, 0], rep[q, 1] - rep[nb, 1])
    exact = np.zeros(len(q), dtype=bool)
    for r in (TOUCH_M, *NEIGHBOUR_RADII_M):
        exact |= (lower <= r) & (upper > r)
    # Candidates for a nearest neighbour: lower bound within the best upper bound seen.
    n = len(b)
    best = np.full(n, np.inf)
    np.minimum.at(best, q, upper)
    np.minimum.at(best, nb, upper)
    exact |= (lower <= best[q]) | (lower <= best[nb])
    d = upper.copy()
    d[exact] = shapely.distance(geoms[q[exact]], geoms[nb[exact]])
    return d


def neighbourhood_features(
    geoms: np.ndarray, area: np.ndarray, heights: np.ndarray | None = None, n_query: int | None = None
) -> dict[str, np.ndarray]:
    """Counts/areas of neighbours within each radius, adjacency, nearest-neighbour distance.

    ``heights`` (NaN = unknown) adds the mean known height of the other footprints in 100 m.
    With ``n_query`` only the first ``n_query`` footprints get features; the rest are their
    context (neighbours from beyond a batch, so that a building's neighbourhood does not end
    where its batch does).
    """
    n = len(geoms)
    nq = n if n_query is None else n_query
    rmax = max(NEIGHBOUR_RADII_M)
    tree = shapely.STRtree(geoms)
    b = shapely.bounds(geoms)
    # Candidates: footprints whose envelope meets the envelope grown by rmax. A plain bbox
    # query plus one exact distance per pair is cheaper than a 'dwithin' query followed by
    # the distances we need anyway for the smaller radii.
    reach = shapely.box(b[:, 0] - rmax, b[:, 1] - rmax, b[:, 2] + rmax, b[:, 3] + rmax)
    rep = shapely.get_coordinates(shapely.point_on_surface(geoms))
    counts = {r: np.zeros(n, dtype=np.int64) for r in NEIGHBOUR_RADII_M}
    sums = {r: np.zeros(n, dtype=np.float64) for r in NEIGHBOUR_RADII_M}
    sq100 = np.zeros(n, dtype=np.float64)
    smaller_50 = np.zeros(n, dtype=np.int64)
    n_touch = np.zeros(n, dtype=np.int64)
    shared = np.zeros(n, dtype=np.float64)
    max_touch = np.zeros(n, dtype=np.float64)
    nn = np.full(n, np.inf)
    h_known = None if heights is None else np.isfinite(heights)
    h_sum = np.zeros(n, dtype=np.float64)
    h_cnt = np.zeros(n, dtype=np.int64)
    for lo in range(0, nq, _CHUNK):
        hi = min(lo + _CHUNK, nq)
        q, nb = tree.query(reach[lo:hi])
        q = q + lo
        # Each unordered pair once (in the chunk of its smaller index; a pair with a context
        # footprint from its queried side); distance is symmetric.
        keep = (q < nb) | (nb >= nq)
        q, nb = q[keep], nb[keep]
        d = pair_distances(geoms, b, rep, q, nb)
        near = d <= rmax
        i = np.concatenate([q[near], nb[near]])  # both directions of every close pair
        j = np.concatenate([nb[near], q[near]])
        dd = np.concatenate([d[near], d[near]])
        queried = i < nq  # context footprints get no statistics of their own
        i, j, dd = i[queried], j[queried], dd[queried]
        for r in NEIGHBOUR_RADII_M:
            m = dd <= r
            counts[r] += np.bincount(i[m], minlength=n)
            sums[r] += np.bincount(i[m], weights=area[j[m]], minlength=n)
            if r == 100.0:
                sq100 += np.bincount(i[m], weights=area[j[m]] ** 2, minlength=n)
                if h_known is not None and heights is not None:
                    mk = m & h_known[j]
                    h_sum += np.bincount(i[mk], weights=heights[j[mk]], minlength=n)
                    h_cnt += np.bincount(i[mk], minlength=n)
        m = (dd <= 50.0) & (area[j] < area[i])
        smaller_50 += np.bincount(i[m], minlength=n)
        np.minimum.at(nn, i, dd)
        t = dd <= TOUCH_M
        it, jt = i[t], j[t]
        if len(it):
            n_touch += np.bincount(it, minlength=n)
            np.maximum.at(max_touch, it, area[jt])
            # Boundary of footprint i that runs within TOUCH_M of neighbour j.
            halo = shapely.buffer(geoms[jt], TOUCH_M, quad_segs=2)
            seg = shapely.length(shapely.intersection(shapely.boundary(geoms[it]), halo))
            shared += np.bincount(it, weights=seg, minlength=n)
    lonely = np.flatnonzero(np.isinf(nn[:nq]))
    if n > 1 and len(lonely):
        # Nothing within rmax: fall back to a nearest-neighbour query for these few.
        (qi, _), dist = tree.query_nearest(geoms[lonely], exclusive=True, return_distance=True)
        np.minimum.at(nn, lonely[qi], dist)
    nn[np.isinf(nn)] = np.nan
    out: dict[str, np.ndarray] = {}
    for r in NEIGHBOUR_RADII_M:
        out[f"n_within_{int(r)}m"] = counts[r]
    for r in NEIGHBOUR_RADII_M:
        out[f"area_within_{int(r)}m_m2"] = sums[r]
    out["nn_dist_m"] = nn

    def mean_nb(r: float) -> np.ndarray:
        c = counts[r]
        return np.where(c > 0, sums[r] / np.maximum(c, 1), np.nan)

    out["mean_neighbour_area_m2"] = mean_nb(100.0)
    out["area_ratio_100m"] = area / out["mean_neighbour_area_m2"]
    out["area_rank_50m"] = np.where(
        counts[50.0] > 0, smaller_50 / np.maximum(counts[50.0], 1), 1.0
    )
    out["n_touching"] = n_touch
    # Several neighbours can cover the same stretch of boundary (corners): cap at 1.
    perimeter = shapely.length(geoms)
    out["shared_perimeter_frac"] = np.minimum(shared / perimeter, 1.0)
    out["max_touching_area_m2"] = max_touch
    for r in NEIGHBOUR_RADII_M:
        # Steiner formula: area of the r-buffer of a convex shape (a lower bound otherwise).
        out[f"coverage_{int(r)}m"] = (area + sums[r]) / (area + perimeter * r + np.pi * r * r)
    out["mean_neighbour_area_50m_m2"] = mean_nb(50.0)
    out["mean_neighbour_area_200m_m2"] = mean_nb(200.0)
    c100 = counts[100.0]
    var = np.where(c100 > 0, sq100 / np.maximum(c100, 1) - out["mean_neighbour_area_m2"] ** 2,
                   np.nan)
    out["std_neighbour_area_100m_m2"] = np.sqrt(np.maximum(var, 0.0))
    if heights is None:
        out["nb_height_mean_100m"] = np.full(n, np.nan)
        out["nb_height_n_100m"] = np.full(n, np.nan)
    else:
        out["nb_height_mean_100m"] = np.where(h_cnt > 0, h_sum / np.maximum(h_cnt, 1), np.nan)
        out["nb_height_n_100m"] = h_cnt.astype(np.float64)
    return {k: v[:nq] for k, v in out.items()} if nq < n else out


def fold_angle(d: np.ndarray) -> np.ndarray:
    """Difference of two undirected directions (deg) folded to [0, 90]."""
    d = np.abs(d) % 180.0
    return np.minimum(d, 180.0 - d)


def centroid_knn(
    cxy: np.ndarray, area: np.ndarray, angle: np.ndarray, n_query: int | None = None
) -> dict[str, np.ndarray]:
    """Nearest-neighbour statistics on centroids (k-d tree) and the 400 m centroid count, for
    the first ``n_query`` centroids (all by default; the rest are context)."""
    total = len(cxy)
    n = total if n_query is None else n_query
    out = {k: np.full(n, np.nan) for k in (
        "knn1_dist_m", "knn3_mean_dist_m", "knn5_mean_dist_m", "nn_area_m2",
        "knn5_mean_area_m2", "nn_orientation_diff_deg", "knn5_orientation_diff_deg")}
    tree = cKDTree(cxy)
    out["n_within_400m"] = tree.query_ball_point(cxy[:n], 400.0, return_length=True).astype(
        np.float64) - 1.0
    if total < 2 or n == 0:
        return out
    k = min(6, total)
    dist, idx = tree.query(cxy[:n], k=k)
    # Column 0 is the point itself unless another centroid coincides; drop self by index.
    self_first = idx[:, 0] == np.arange(n)
    nd = np.where(self_first[:, None], dist[:, 1:], dist[:, :-1])
    ni = np.where(self_first[:, None], idx[:, 1:], idx[:, :-1])
    m = ni.shape[1]
    out["knn1_dist_m"] = nd[:, 0]
    out["knn3_mean_dist_m"] = nd[:, : min(3, m)].mean(axis=1) if m >= 3 else np.full(n, np.nan)
    out["knn5_mean_dist_m"] = nd.mean(axis=1) if m >= 5 else np.full(n, np.nan)
    out["nn_area_m2"] = area[ni[:, 0]]
    out["nn_orientation_diff_deg"] = fold_angle(angle[:n] - angle[ni[:, 0]])
    if m >= 5:
        out["knn5_mean_area_m2"] = area[ni].mean(axis=1)
        out["knn5_orientation_diff_deg"] = fold_angle(angle[:n, None] - angle[ni]).mean(axis=1)
    return out
