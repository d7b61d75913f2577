"""Roof planes a PV array can sit on, from the roof shape class and the footprint's main axis.

GBM (``global-building-map.txt``, "Solar Potential Analysis") puts panels on the whole
footprint at the location's PVOUT and names the orientation of roof segments as what a detailed
analysis should add. This module adds it, with stated assumptions:

* **flat** roof: modules in rows, equator-facing at the location's optimum tilt (so the
  specific yield is PVOUT itself), with row spacing. GBM's 10 m² of roof per kWp is read as
  modules of 5 m²/kWp (≈ 20 % efficiency) at a ground-coverage ratio of 0.5; the spacing is
  taken to keep inter-row shading small, which is not modelled.
* **gable** roof: two planes at a typical pitch (30°, :data:`TYPICAL_PITCH_DEG`), the ridge
  along the footprint's main (long) axis, each covering half the footprint; sloped area =
  horizontal area / cos(pitch). Modules lie flush (no row spacing) on ``pitched_fill`` (0.7) of
  each plane, the rest being set-backs from eaves, ridge and verges.
* **hip** roof: four planes at the same pitch facing the four sides of the main axis, each a
  quarter of the footprint (exact for a square hip; an approximation for long ones).
* A plane whose yield is below ``min_plane_yield_ratio`` (0.8) of the location's optimum is
  left without modules — the suitability rule of Gagnon et al. (2016, NREL/TP-6A20-65298),
  which also drops most north-facing planes in the northern hemisphere.
* **unknown** shape (no class, ``unknown``, or a class not listed here), or a pitched roof with
  no main axis: the flat-roof assumption, named in ``fallback``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Typical pitch of gable and hip roofs (°); an assumption, not a measurement.
TYPICAL_PITCH_DEG = 30.0
ROOF_FALLBACKS: dict[str, str] = {
    "roof_shape_unknown_flat": "roof shape unknown or not flat/gable/hip: flat-roof layout assumed",
    "roof_axis_unknown_flat": "pitched roof without a footprint main axis: flat-roof layout assumed",
}


@dataclass(frozen=True)
class Planes:
    """Roof planes of a batch, one row per plane.

    Attributes:
        building: index of the building each plane belongs to.
        tilt: plane tilt (°); NaN = flat-roof layout (modules at the optimum tilt).
        azimuth: direction the plane faces (° clockwise from north); NaN for flat layouts.
        area_m2: roof area of the plane (sloped for pitched planes).
        fallback: per building, the roof token ("" when the shape was used as given).
    """

    building: np.ndarray
    tilt: np.ndarray
    azimuth: np.ndarray
    area_m2: np.ndarray
    fallback: np.ndarray


def roof_planes(footprint_area_m2: np.ndarray | Sequence[float],
                roof_shape: Sequence[str | None] | None = None,
                main_axis_deg: np.ndarray | Sequence[float] | None = None,
                pitch_deg: float = TYPICAL_PITCH_DEG) -> Planes:
    """The planes of every building (module docstring). ``main_axis_deg`` is the bearing of
    the footprint's long axis (° from north, 0–180); NaN = unknown."""
    area = np.asarray(footprint_area_m2, dtype=np.float64).ravel()
    n = len(area)
    shapes = np.asarray([str(s or "").lower() for s in (roof_shape if roof_shape is not None else [""] * n)],
                        dtype=object)
    axis = np.asarray(main_axis_deg if main_axis_deg is not None else np.full(n, np.nan),
                      dtype=np.float64).ravel()
    gable, hip = shapes == "gable", shapes == "hip"
    oriented = np.isfinite(axis)
    k = np.where(gable & oriented, 2, np.where(hip & oriented, 4, 1))  # planes per building
    building = np.repeat(np.arange(n), k)
    face = np.arange(len(building)) - np.repeat(np.cumsum(k) - k, k)  # 0..k-1 within a building
    kb = k[building]
    # Faces: ±90° of the ridge (main axis) first, then (hip) the two ends along the axis.
    turn = np.choose(np.minimum(face, 3), [90.0, -90.0, 0.0, 180.0])
    pitched = kb > 1
    tilt = np.where(pitched, pitch_deg, np.nan)
    azimuth = np.where(pitched, (axis[building] + turn) % 360.0, np.nan)
    plane_area = np.where(pitched, area[building] / kb / np.cos(np.radians(pitch_deg)), area[building])
    token = np.full(n, "", dtype=object)
    token[(gable | hip) & ~oriented] = "roof_axis_unknown_flat"
    token[~gable & ~hip & (shapes != "flat")] = "roof_shape_unknown_flat"
    return Planes(building.astype(np.int64), tilt, azimuth, plane_area, token)


def main_axis_deg(geometries, crs=None) -> np.ndarray:
    """Bearing (° from north, in [0, 180)) of the long side of each footprint's minimum
    rotated rectangle; NaN for empty or degenerate geometries.

    Args:
        geometries: shapely geometries (a GeoSeries or a sequence).
        crs: their CRS; geographic coordinates are measured in a local equirectangular frame
            (x scaled by cos(latitude)), which is exact enough for a building.
    """
    import shapely

    geoms = np.asarray(list(geometries), dtype=object)
    out = np.full(len(geoms), np.nan)
    geographic = crs is None or getattr(crs, "is_geographic", True)
    for i, g in enumerate(geoms):
        if g is None or g.is_empty:
            continue
        rect = shapely.minimum_rotated_rectangle(g)
        xy = np.asarray(rect.exterior.coords) if rect.geom_type == "Polygon" else None
        if xy is None or len(xy) < 4:
            continue
        if geographic:
            xy = xy * [np.cos(np.radians(xy[:, 1].mean())), 1.0]
        e = np.diff(xy[:3], axis=0)  # two adjacent sides
        lengths = np.hypot(e[:, 0], e[:, 1])
        if not lengths.max() > 0:
            continue
        dx, dy = e[int(np.argmax(lengths))]
        out[i] = np.degrees(np.arctan2(dx, dy)) % 180.0
    return out
