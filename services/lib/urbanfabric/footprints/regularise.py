"""Footprint regularisation: straight, square outlines where the building is rectilinear.

A polygon traced from a probability mask is a pixel staircase. Regularisation turns each
connected block of building pixels into a clean outline and keeps the walls that split it:

* **Dominant direction.** The block's outline is first simplified (Douglas–Peucker at half the
  tolerance, which removes the staircase but keeps corners); the length-weighted mean of the
  edge angles modulo 90° (a circular mean of 4·angle) gives the building's main axis.
* **Orthogonal or free.** A building whose minimum rotated rectangle, moved in to the
  outline's area, lies within the tolerance of its outline becomes that rectangle. Otherwise, when most of the outline's length (:data:`RECTILINEAR_SHARE`) runs
  within :data:`SNAP_DEG` of the axis or its normal, every such edge is snapped to it: runs of
  parallel edges become one line at their length-weighted offset, short jogs between two nearly
  collinear lines are dropped, and the corners are the intersections of consecutive lines.
  Edges far from both directions (a chamfer) keep their own line. Otherwise the outline stays
  free: Douglas–Peucker at the tolerance (a round building stays roundish).
  An orthogonal outline with more corners than the free one is not kept (a staircase laid over a
  curve).
* **Tolerance.** The result must lie within ``tolerance_m`` of the traced outline (Hausdorff
  distance); an orthogonal outline that does not falls back to the free one, which does by
  construction.
* **Valid always.** Every result goes through ``make_valid`` and keeps its polygonal parts.
* **Shared walls.** Buildings split out of one block (:mod:`urbanfabric.footprints.splitting`)
  are cut from the block's regularised outline along their shared walls, each wall
  straightened once (snapped to the block's axis when it is close) and used by both sides, so
  neighbours share an edge exactly and never overlap.

Everything runs in a metric CRS (metres); the caller reprojects.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import shapely
from shapely.geometry import LinearRing, LineString, MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

#: Default vertex-displacement tolerance (metres): about two pixels of 0.5 m imagery.
DEFAULT_TOLERANCE_M = 1.0
#: Edges within this angle of the axis (or its normal) are snapped to it.
SNAP_DEG = 20.0
#: Share of the simplified outline's length that must be snappable for an orthogonal outline.
RECTILINEAR_SHARE = 0.6


@dataclass(frozen=True)
class Regularised:
    """A block's regularised outline and how it was made."""

    polygon: Polygon
    orthogonal: bool
    axis_deg: float


def dominant_axis(ring: np.ndarray) -> tuple[float, float]:
    """``(axis angle in radians in [0, π/2), share of length within SNAP_DEG of it)`` of a closed ring."""
    d = np.diff(ring, axis=0)
    length = np.hypot(d[:, 0], d[:, 1])
    if length.sum() <= 0:
        return 0.0, 0.0
    angle = np.arctan2(d[:, 1], d[:, 0])
    # 4·angle folds the four directions of a rectilinear outline onto one.
    axis = (math.atan2(float((length * np.sin(4 * angle)).sum()),
                       float((length * np.cos(4 * angle)).sum())) / 4) % (math.pi / 2)
    deviation = np.abs((angle - axis + math.pi / 4) % (math.pi / 2) - math.pi / 4)
    share = float(length[deviation <= math.radians(SNAP_DEG)].sum() / length.sum())
    return axis, share


def _rotate(xy: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return xy @ np.array([[c, s], [-s, c]])


def _snap_ring(ring: np.ndarray, axis: float, min_edge: float) -> np.ndarray | None:
    """A closed ring with its near-axis edges snapped to the axis (``None`` when it degenerates).

    Works in the frame rotated by ``-axis``: class 0 edges are horizontal (``y = offset``),
    class 1 vertical (``x = offset``), class 2 keep their own line.
    """
    local = _rotate(ring[:-1], -axis)
    n = len(local)
    if n < 3:
        return None
    start, end = local, np.roll(local, -1, axis=0)
    d = end - start
    length = np.hypot(d[:, 0], d[:, 1])
    angle = np.arctan2(d[:, 1], d[:, 0]) % math.pi
    tol = math.radians(SNAP_DEG)
    kind = np.full(n, 2)
    kind[(angle <= tol) | (angle >= math.pi - tol)] = 0
    kind[np.abs(angle - math.pi / 2) <= tol] = 1
    # Lines as (kind, offset, weight, point, direction); offsets are length-weighted.
    lines: list[list] = []
    for i in range(n):
        mid = (start[i] + end[i]) / 2
        offset = mid[1] if kind[i] == 0 else mid[0]
        lines.append([int(kind[i]), float(offset), float(length[i]), start[i].copy(), d[i].copy()])
    changed = True
    while changed and len(lines) >= 3:
        changed = False
        # Merge consecutive lines of the same snapped class (the staircase left by simplification).
        i = 0
        while i < len(lines) and len(lines) >= 3:
            a, b = lines[i], lines[(i + 1) % len(lines)]
            if a[0] == b[0] and a[0] != 2 and abs(a[1] - b[1]) <= min_edge and _same_way(a, b):
                w = a[2] + b[2]
                a[1] = (a[1] * a[2] + b[1] * b[2]) / w if w > 0 else a[1]
                a[2] = w
                del lines[(i + 1) % len(lines)]
                changed = True
            else:
                i += 1
        # Drop the shortest edge under ``min_edge`` whose neighbours still meet (or continue each
        # other): jogs and cut corners the simplification left. The Hausdorff check guards the result.
        # A free edge counts at half its length: short diagonals are the staircase's remains.
        short = [lines[k][2] / (2 if lines[k][0] == 2 else 1) for k in range(len(lines))]
        for i in sorted(range(len(lines)), key=short.__getitem__):
            cur = lines[i]
            if short[i] >= min_edge or len(lines) < 4:
                break
            prev, nxt = lines[i - 1], lines[(i + 1) % len(lines)]
            parallel = prev[0] == nxt[0] != 2
            # Parallel neighbours running opposite ways flank a thin spike or slot: dropping its
            # cap would fold the outline back on itself (a zero-width spike).
            if (parallel and abs(prev[1] - nxt[1]) <= min_edge and _same_way(prev, nxt)) or (
                    not parallel and _intersect(prev, nxt) is not None):
                del lines[i]
                changed = True
                break
    if len(lines) < 3:
        return None
    corners = []
    for i in range(len(lines)):
        p = _intersect(lines[i - 1], lines[i])
        if p is None:
            return None
        corners.append(p)
    out = _rotate(np.array(corners), axis)
    return np.vstack([out, out[:1]])


def _same_way(a: list, b: list) -> bool:
    """Whether two lines of the rotated frame run the same way (their directions agree)."""
    return float(np.dot(a[4], b[4])) > 0


def _intersect(a: list, b: list) -> np.ndarray | None:
    """Corner where line ``a`` meets line ``b`` (rotated frame), ``None`` when they are parallel."""
    if a[0] == 0 and b[0] == 1:
        return np.array([b[1], a[1]])
    if a[0] == 1 and b[0] == 0:
        return np.array([a[1], b[1]])
    pa, da = _as_free(a)
    pb, db = _as_free(b)
    cross = da[0] * db[1] - da[1] * db[0]
    if abs(cross) < 1e-9 * (np.hypot(*da) * np.hypot(*db) + 1e-12):
        return None
    t = ((pb[0] - pa[0]) * db[1] - (pb[1] - pa[1]) * db[0]) / cross
    return pa + t * da


def _as_free(line: list) -> tuple[np.ndarray, np.ndarray]:
    kind, offset, _, point, direction = line
    if kind == 0:
        return np.array([point[0], offset]), np.array([1.0, 0.0])
    if kind == 1:
        return np.array([offset, point[1]]), np.array([0.0, 1.0])
    return point, direction


def polygonal(geom: BaseGeometry) -> Polygon | MultiPolygon:
    """``geom`` made valid, keeping only its polygonal parts (empty Polygon when none)."""
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    parts = [g for g in shapely.get_parts(geom) if isinstance(g, Polygon) and not g.is_empty]
    if not parts:
        return Polygon()
    if len(parts) == 1:
        return parts[0]
    merged = shapely.union_all(parts)
    return merged if isinstance(merged, (Polygon, MultiPolygon)) else Polygon()


def largest_part(geom: BaseGeometry) -> Polygon:
    """The largest polygon of ``geom`` (``geom`` itself when it is one)."""
    parts = [g for g in shapely.get_parts(geom) if isinstance(g, Polygon)]
    return max(parts, key=lambda g: g.area) if parts else Polygon()


def free_outline(outline: Polygon, tolerance_m: float) -> Polygon:
    """Douglas–Peucker at ``tolerance_m`` (topology kept), made valid."""
    return largest_part(polygonal(outline.simplify(tolerance_m, preserve_topology=True)))


def regularise_outline(outline: Polygon, tolerance_m: float = DEFAULT_TOLERANCE_M) -> Regularised:
    """One block's traced outline (metres) → its regularised outline within ``tolerance_m``."""
    if outline.is_empty or tolerance_m <= 0:
        return Regularised(outline, False, 0.0)
    outline = largest_part(polygonal(outline))
    # Half the tolerance removes the staircase but keeps corners; the free outline may use all of it.
    coarse = free_outline(outline, tolerance_m / 2)
    free = free_outline(outline, tolerance_m)
    if coarse.is_empty or free.is_empty:
        return Regularised(outline, False, 0.0)
    axis, share = dominant_axis(np.asarray(coarse.exterior.coords))
    if share < RECTILINEAR_SHARE:
        return Regularised(free, False, math.degrees(axis))
    rings = [np.asarray(coarse.exterior.coords)] + [np.asarray(r.coords) for r in coarse.interiors]
    # The edges of a simplified staircase lean by a degree or two; the minimum rotated rectangle
    # of the outline often has the truer axis. Both are tried and the closer result kept.
    axes = [axis]
    mrr = np.asarray(outline.minimum_rotated_rectangle.exterior.coords)
    if len(mrr) >= 2:
        alt = math.atan2(mrr[1, 1] - mrr[0, 1], mrr[1, 0] - mrr[0, 0]) % (math.pi / 2)
        gap = abs((alt - axis + math.pi / 4) % (math.pi / 2) - math.pi / 4)
        if 1e-3 < gap <= math.radians(SNAP_DEG) / 2:
            axes.append(alt)
    best: tuple[float, Polygon, float] | None = None
    # A plain rectangle first: the minimum rotated rectangle, when it stays within the tolerance
    # (a rectangular roof whose corners the mask rounded off), is the cleanest outline there is.
    rectangle = _area_rectangle(outline)
    if rectangle is not None and shapely.hausdorff_distance(rectangle, outline) <= tolerance_m:
        corners = np.asarray(rectangle.exterior.coords)
        side = corners[1] - corners[0]
        return Regularised(rectangle, True, math.degrees(math.atan2(side[1], side[0]) % (math.pi / 2)))
    for ax in axes:
        # Dropping jogs up to the whole tolerance gives the cleanest outline; half of it moves less.
        for min_edge in (tolerance_m, tolerance_m / 2):
            snapped = [_snap_ring(r, ax, min_edge) for r in rings]
            if snapped[0] is None:
                continue
            holes = [h for h in snapped[1:] if h is not None and len(h) >= 4]
            # buffer(0) drops any zero-width spike left (valid to GEOS, but it folds on itself).
            candidate = largest_part(polygonal(Polygon(snapped[0], holes).buffer(0)))
            # The traced outline has a vertex at every pixel step, so the discrete Hausdorff
            # distance (no densifying, several times cheaper) already sees every notch.
            if candidate.is_empty or shapely.hausdorff_distance(candidate, outline) > tolerance_m:
                continue
            miss = candidate.symmetric_difference(outline).area
            if best is None or miss < best[0]:
                best = (miss, candidate, ax)
            break
    # An orthogonal outline with more corners than the free one is a staircase laid over a
    # shape that is not rectilinear (a curve, a blob): keep it free.
    if best is None or shapely.get_num_coordinates(best[1]) > shapely.get_num_coordinates(free):
        return Regularised(free, False, math.degrees(axis))
    return Regularised(best[1], True, math.degrees(best[2]))


def _area_rectangle(outline: Polygon) -> Polygon | None:
    """The minimum rotated rectangle moved in evenly until it has the outline's area.

    The minimum rotated rectangle circumscribes the pixel staircase (a few per cent too large
    on a tilted building); the inward offset ``d`` solves ``(L − 2d)(W − 2d) = area``.
    """
    if outline.interiors:
        return None
    mrr = outline.minimum_rotated_rectangle
    if not isinstance(mrr, Polygon):
        return None
    c = np.asarray(mrr.exterior.coords)
    length, width = float(np.hypot(*(c[1] - c[0]))), float(np.hypot(*(c[2] - c[1])))
    excess = length * width - outline.area
    disc = (length + width) ** 2 - 4 * excess
    if excess <= 0 or disc < 0:
        return mrr
    d = ((length + width) - math.sqrt(disc)) / 4
    shrunk = mrr.buffer(-d, join_style="mitre")
    return shrunk if isinstance(shrunk, Polygon) and not shrunk.is_empty else None


def _straight_wall(wall: LineString, axis: float, tolerance_m: float) -> LineString:
    """A shared wall as one segment (snapped to the axis when close), else simplified."""
    coords = np.asarray(wall.coords)
    a, b = coords[0], coords[-1]
    seg = LineString([a, b])
    if seg.length > 0 and shapely.hausdorff_distance(seg, wall) <= tolerance_m:
        mid, half = (a + b) / 2, np.hypot(*(b - a)) / 2
        angle = math.atan2(b[1] - a[1], b[0] - a[0])
        nearest = axis + round((angle - axis) / (math.pi / 2)) * (math.pi / 2)
        if abs(nearest - angle) <= math.radians(SNAP_DEG):
            u = np.array([math.cos(nearest), math.sin(nearest)])
            snapped = LineString([mid - half * u, mid + half * u])
            if shapely.hausdorff_distance(snapped, wall) <= tolerance_m:
                return snapped
        return seg
    simple = wall.simplify(tolerance_m / 2)
    return simple if isinstance(simple, LineString) else wall


def _extended(line: LineString, by: float) -> LineString:
    """``line`` lengthened by ``by`` at both ends along its end segments (to cross the outline)."""
    c = np.asarray(line.coords, dtype=float).copy()
    for end, inner in ((0, 1), (-1, -2)):
        d = c[end] - c[inner]
        n = np.hypot(*d)
        if n > 0:
            c[end] = c[end] + d / n * by
    return LineString(c)


def split_block(outline: Polygon, pieces: Sequence[Polygon], tolerance_m: float, pixel_m: float,
                axis_deg: float) -> list[Polygon]:
    """Cut a block's regularised ``outline`` into its buildings along their shared walls.

    Args:
        outline: the block's regularised outline.
        pieces: the buildings' traced polygons (pixel-exact, sharing their walls exactly).
        tolerance_m: how far a straightened wall may move from the traced one.
        pixel_m: the raster's pixel size; walls are lengthened past the outline by
            ``tolerance_m + 2 · pixel_m`` so that they cut it.
        axis_deg: the block's main axis (walls close to it or its normal are snapped).

    Returns:
        One polygon per piece, in order (empty where a piece lost all its area); the polygons
        share their walls' vertices exactly and do not overlap.
    """
    axis = math.radians(axis_deg)
    walls = []
    tree = shapely.STRtree(list(pieces))
    left, right = tree.query(list(pieces), predicate="touches")
    for i, j in zip(left, right):
        if i >= j:
            continue
        shared = shapely.line_merge(shapely.intersection(pieces[i].boundary, pieces[j].boundary))
        for part in shapely.get_parts(shared):
            if isinstance(part, LineString) and part.length > 0:
                walls.append(_extended(_straight_wall(part, axis, tolerance_m), tolerance_m + 2 * pixel_m))
    boundary = [outline.exterior, *outline.interiors]
    faces = [f for f in shapely.get_parts(shapely.polygonize(
        [shapely.union_all([*boundary, *walls])])) if f.area > 0]
    faces = [f for f in faces if outline.contains(f.representative_point())]
    # Each face goes to the piece it overlaps most (or the nearest, for area the outline gained).
    piece_arr = np.array(pieces, dtype=object)
    owner = []
    for face in faces:
        overlap = shapely.area(shapely.intersection(piece_arr, face))
        owner.append(int(overlap.argmax()) if overlap.max() > 0
                     else int(shapely.distance(piece_arr, face).argmin()))
    out: list[Polygon] = []
    for k in range(len(pieces)):
        mine = [f for f, o in zip(faces, owner) if o == k]
        out.append(polygonal(shapely.union_all(mine)) if mine else Polygon())
    return _one_part_each(out)


def _one_part_each(polys: list) -> list[Polygon]:
    """Give each building its largest part; stray parts go to the neighbour sharing most edge."""
    main = [largest_part(p) for p in polys]
    for k, geom in enumerate(polys):
        for part in shapely.get_parts(geom):
            if part is main[k] or part.equals(main[k]):
                continue
            shared = [main[j].boundary.intersection(part.boundary).length if j != k else 0.0
                      for j in range(len(main))]
            j = int(np.argmax(shared))
            if shared[j] > 0:
                main[j] = largest_part(polygonal(shapely.union(main[j], part)))
    return main


def without_overlaps(polys: list, traced: Sequence[BaseGeometry]) -> list:
    """``polys`` with every overlap given to the polygon whose ``traced`` outline covers more of it.

    Separately regularised neighbours a pixel apart may each move up to the tolerance towards the
    other; the loser keeps its largest part outside the winner (edges along the overlap shared).
    """
    out = list(polys)
    if len(out) < 2:
        return out
    arr = np.array(out, dtype=object)
    left, right = shapely.STRtree(arr).query(arr, predicate="intersects")
    for i, j in zip(left.tolist(), right.tolist()):
        if i >= j:
            continue
        overlap = out[i].intersection(out[j])
        if overlap.area <= 0:
            continue
        if traced[i].intersection(overlap).area >= traced[j].intersection(overlap).area:
            out[j] = largest_part(polygonal(out[j].difference(out[i])))
        else:
            out[i] = largest_part(polygonal(out[i].difference(out[j])))
    return out


def without_small_holes(poly: Polygon, min_area_m2: float, min_gap_m: float = 0.0) -> Polygon:
    """``poly`` without the holes smaller than ``min_area_m2`` or closer than ``min_gap_m`` to its shell
    or to a larger hole.

    A hole touching the shell at a point is valid, but reprojection rounding can make it cross
    the shell (a self-intersection in the table): such a hole is an open notch, not a courtyard.
    """
    if poly.is_empty or not poly.interiors:
        return poly
    holes: list[LinearRing] = []
    for ring in sorted(poly.interiors, key=lambda r: -Polygon(r).area):
        if Polygon(ring).area < min_area_m2:
            continue
        if min_gap_m > 0 and (ring.distance(poly.exterior) < min_gap_m
                              or any(ring.distance(h) < min_gap_m for h in holes)):
            continue
        holes.append(ring)
    return poly if len(holes) == len(poly.interiors) else Polygon(poly.exterior, holes)

