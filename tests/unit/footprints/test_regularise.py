"""Footprint regularisation and splitting on tiny rasters in a real CRS (UTM 50N, 0.5 m pixels)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import rasterio.features
import shapely
from affine import Affine
from shapely import affinity
from shapely.geometry import Point, Polygon, box

from urbanfabric.errors import InvalidInput
from urbanfabric.footprints import regularise as reg
from urbanfabric.footprints.polygons import polygonize
from urbanfabric.footprints.splitting import split_touching

CRS = "EPSG:32650"
PIXEL = 0.5
TRANSFORM = Affine(PIXEL, 0, 600_000, 0, -PIXEL, 2_710_000)
SIZE = 160
#: The middle of the raster, in metres.
CX, CY = 600_000 + SIZE * PIXEL / 2, 2_710_000 - SIZE * PIXEL / 2


def probability(*shapes: tuple[Polygon, float]) -> np.ndarray:
    """A probability raster: 0.05 background, each shape burnt in at its value."""
    prob = np.full((SIZE, SIZE), 0.05, np.float32)
    for geom, value in shapes:
        inside = rasterio.features.rasterize([(geom, 1)], out_shape=prob.shape, transform=TRANSFORM).astype(bool)
        prob[inside] = value
    return prob


def footprints(prob: np.ndarray, tolerance: float = 1.0, split: bool = True) -> list[Polygon]:
    fp = polygonize(prob, TRANSFORM, CRS, threshold=0.5, regularise_tolerance_m=tolerance,
                    split_touching_buildings=split)
    return list(fp.to_crs(CRS).geometry)


def traced(prob: np.ndarray) -> list[Polygon]:
    """The pixel-exact outlines (what regularisation starts from)."""
    mask = prob >= 0.5
    return [shapely.geometry.shape(g) for g, _ in
            rasterio.features.shapes(mask.astype(np.uint8), mask=mask, transform=TRANSFORM)]


def edge_angles(poly: Polygon) -> np.ndarray:
    xy = np.asarray(poly.exterior.coords)
    d = np.diff(xy, axis=0)
    return np.degrees(np.arctan2(d[:, 1], d[:, 0]))


def rotated(geom: Polygon, degrees: float) -> Polygon:
    return affinity.rotate(geom, degrees, origin=(CX, CY))


L_SHAPE = Polygon([(0, 0), (20, 0), (20, 8), (8, 8), (8, 16), (0, 16)])


@pytest.mark.parametrize("angle", [0.0, 17.0, 30.0, 62.0])
def test_a_rectilinear_l_shape_snaps_orthogonal(angle: float) -> None:
    l_shape = rotated(affinity.translate(L_SHAPE, CX - 10, CY - 8), angle)
    (poly,) = footprints(probability((l_shape, 0.95)))
    assert len(poly.exterior.coords) - 1 == 6
    angles = edge_angles(poly)
    turns = (angles - angles[0]) % 90
    # Every edge runs along one axis or its normal (to float precision) ...
    assert np.all(np.minimum(turns, 90 - turns) < 1e-6), turns
    # ... and that axis is the building's (within what a 0.5 m staircase tells).
    off = (angles[0] - angle) % 90
    assert min(off, 90 - off) < 2.0
    assert poly.is_valid
    assert poly.area == pytest.approx(l_shape.area, rel=0.05)


def test_a_circle_stays_free() -> None:
    circle = Point(CX, CY).buffer(9)
    (poly,) = footprints(probability((circle, 0.95)))
    result = reg.regularise_outline(traced(probability((circle, 0.95)))[0], 1.0)
    assert not result.orthogonal
    assert len(poly.exterior.coords) - 1 >= 8
    assert poly.area == pytest.approx(circle.area, rel=0.06)
    # Still round: its vertices all lie near the circle.
    radii = np.hypot(*(np.asarray(poly.exterior.coords) - (CX, CY)).T)
    assert np.all(np.abs(radii - 9) < 1.0)


def terrace(angle: float) -> tuple[np.ndarray, Polygon, Polygon, Polygon]:
    """Two houses sharing a wall, merged in the mask; the probability dips (0.6) along the wall."""
    a = rotated(box(CX - 12, CY - 6, CX, CY + 6), angle)
    b = rotated(box(CX, CY - 6, CX + 11, CY + 6), angle)
    wall = rotated(box(CX - 0.5, CY - 6, CX + 0.5, CY + 6), angle)
    prob = probability((a, 0.95), (b, 0.9))
    on_wall = rasterio.features.rasterize([(wall, 1)], out_shape=prob.shape, transform=TRANSFORM).astype(bool)
    prob[on_wall & (prob > 0.5)] = 0.6
    return prob, a, b, rotated(shapely.LineString([(CX, CY - 6), (CX, CY + 6)]), angle)


@pytest.mark.parametrize("angle", [0.0, 20.0, 45.0])
def test_two_buildings_sharing_a_wall_keep_sharing_it_and_do_not_overlap(angle: float) -> None:
    prob, a, b, wall = terrace(angle)
    polys = footprints(prob)
    assert len(polys) == 2
    first, second = sorted(polys, key=lambda p: p.centroid.distance(a.centroid))
    assert first.is_valid and second.is_valid
    assert first.intersection(second).area < 1e-6
    shared = first.boundary.intersection(second.boundary).length
    assert shared >= 0.9 * wall.length
    assert first.area == pytest.approx(a.area, rel=0.1)
    assert second.area == pytest.approx(b.area, rel=0.1)
    # The shared wall lies within the tolerance of the true one.
    assert shapely.hausdorff_distance(first.boundary.intersection(second.boundary), wall) <= 1.0 + PIXEL


def test_without_splitting_the_terrace_is_one_building() -> None:
    prob, *_ = terrace(20.0)
    assert len(footprints(prob, split=False)) == 1


def test_split_needs_a_dip_in_the_probability() -> None:
    a = box(CX - 12, CY - 6, CX + 11, CY + 6)
    labels, n = split_touching(probability((a, 0.95)), 0.5, min_core_px=10)
    assert n == 1


def test_split_labels_cover_the_mask_exactly() -> None:
    prob, *_ = terrace(20.0)
    labels, n = split_touching(prob, 0.5, min_core_px=10)
    assert n == 2
    assert np.array_equal(labels > 0, prob >= 0.5)


def test_invalid_input_becomes_valid() -> None:
    bowtie = Polygon([(CX, CY), (CX + 10, CY + 10), (CX + 10, CY), (CX, CY + 10)])
    assert not bowtie.is_valid
    result = reg.regularise_outline(bowtie, 1.0)
    assert result.polygon.is_valid and not result.polygon.is_empty
    # Pixels touching only at a corner (two components in 4-connectivity) and a one-pixel hole.
    prob = np.full((SIZE, SIZE), 0.05, np.float32)
    prob[40:60, 40:60] = 0.9
    prob[60:80, 60:80] = 0.9
    prob[50, 50] = 0.1
    assert all(p.is_valid for p in footprints(prob))


@pytest.mark.parametrize("tolerance", [0.5, 1.0, 2.0])
def test_tolerance_is_respected(tolerance: float) -> None:
    rng = np.random.default_rng(7)
    # An irregular, mostly rectilinear building: an L with a notch, and a noisy edge.
    shape_ = rotated(affinity.translate(L_SHAPE, CX - 10, CY - 8), 25).difference(
        Point(CX + 4, CY - 4).buffer(2.5))
    prob = probability((shape_, 0.95))
    band = rasterio.features.rasterize([(shape_.boundary.buffer(1.0), 1)], out_shape=prob.shape,
                                       transform=TRANSFORM).astype(bool)
    prob[band] += rng.normal(0, 0.3, int(band.sum())).astype(np.float32)
    outlines = traced(prob)
    polys = footprints(prob, tolerance)
    assert polys
    for poly in polys:
        source = max(outlines, key=lambda o: o.intersection(poly).area)
        assert shapely.hausdorff_distance(poly, source, densify=0.1) <= tolerance + PIXEL


def test_regularisation_off_gives_the_plain_outlines() -> None:
    l_shape = rotated(affinity.translate(L_SHAPE, CX - 10, CY - 8), 30)
    plain = polygonize(probability((l_shape, 0.95)), TRANSFORM, CRS, threshold=0.5)
    assert len(plain) == 1
    assert len(plain.geometry.iloc[0].exterior.coords) - 1 > 6


def test_a_negative_tolerance_names_the_field() -> None:
    with pytest.raises(InvalidInput, match="regularise_tolerance_m"):
        polygonize(probability(), TRANSFORM, CRS, regularise_tolerance_m=-1)


def test_dominant_axis_of_a_rotated_rectangle() -> None:
    rect = rotated(box(CX - 10, CY - 4, CX + 10, CY + 4), 33)
    axis, share = reg.dominant_axis(np.asarray(rect.exterior.coords))
    assert math.degrees(axis) == pytest.approx(33, abs=1e-6)
    assert share == pytest.approx(1.0)


def test_neighbours_a_pixel_apart_stay_apart() -> None:
    # Two irregular blocks one pixel apart: each may move up to the tolerance towards the other.
    a = rotated(box(CX - 14, CY - 7, CX - 0.25, CY + 7), 12).union(Point(CX - 3, CY + 7).buffer(2))
    b = rotated(box(CX + 0.25, CY - 7, CX + 12, CY + 7), 12)
    polys = footprints(probability((a, 0.95), (b, 0.95)), tolerance=2.0)
    assert len(polys) == 2
    assert polys[0].intersection(polys[1]).area < 1e-6
    assert all(p.is_valid for p in polys)


def test_without_overlaps_gives_the_overlap_to_the_better_traced_side() -> None:
    left, right = box(0, 0, 10, 10), box(9, 0, 20, 10)
    traced_left, traced_right = box(0, 0, 9.8, 10), box(9.8, 0, 20, 10)
    out = reg.without_overlaps([left, right], [traced_left, traced_right])
    assert out[0].intersection(out[1]).area == 0
    assert out[0].area == pytest.approx(100) and out[1].area == pytest.approx(100)
