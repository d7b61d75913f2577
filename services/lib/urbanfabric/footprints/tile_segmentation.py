"""One tile's segmentation: the models over the calibrated tile, the cut, the footprints, the mask.

What the segmentation service runs for every ``Segment`` call, minus storage: each member of
the ensemble goes over the tile in blended windows (with test-time augmentation), the members
are combined (GBM "Model Ensemble": a vote or their mean), the optional land-cover filter is
applied, the halo is cropped, and the probability is cut at the threshold the options and the
models' validation choose. The service reads the tile, calls :func:`segment_tile`, and stores
:meth:`SegmentedTile.mask` and :attr:`SegmentedTile.footprints`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
from affine import Affine
from rasterio.crs import CRS

from urbanfabric.errors import InvalidInput, NotFound
from urbanfabric.footprints import polygons, windows
from urbanfabric.footprints.ensemble import EnsembleCombine, combine
from urbanfabric.footprints.options import SegmentationOptions
from urbanfabric.footprints.regularise import DEFAULT_TOLERANCE_M
from urbanfabric.io.model_repository import split_model_ref
from urbanfabric.footprints.tta import TTA, with_tta
from urbanfabric.io.model_repository import model_config
from urbanfabric.io.rasters import Raster

#: ``(model, version, windows (N, 3, H, W)) -> probabilities (N, H, W)``: one served model call.
Infer = Callable[[str, str, np.ndarray], np.ndarray]
#: The land-cover post-filter: probability (rows, cols) on the ARD grid in, filtered out.
LandCoverFilter = Callable[[np.ndarray], np.ndarray]

#: Mask band values: probability in percent (band 1) and building 0/1 (band 2); 255 = no data.
MASK_NODATA = 255


def model_threshold(name: str, version: str, tta: TTA = TTA.NONE) -> float:
    """The probability threshold chosen on validation data (0.5 when the config has none).

    Segmentation configs keep it under ``output.threshold``; a top-level ``threshold`` is
    accepted too. Averaging views smooths the probability, so the best cut under test-time
    augmentation can differ: ``output.threshold_by_tta`` (written by ``footprint_eval
    --threshold-from val --record-threshold``) holds the one chosen on val under each TTA.
    """
    try:
        config = model_config(name, version)
    except NotFound:
        return 0.5
    output = config.get("output") or {}
    by_tta = output.get("threshold_by_tta") or {}
    if tta.value in by_tta:
        return float(by_tta[tta.value])
    return float(config.get("threshold", output.get("threshold", 0.5)))


@dataclass(frozen=True)
class SegmentedTile:
    """The tile's building probability (halo cropped), the cut applied, and its footprints."""

    probability: np.ndarray
    threshold: float
    transform: Affine
    crs: CRS
    footprints: gpd.GeoDataFrame

    def mask(self) -> Raster:
        """Two uint8 bands: probability in percent, and building (1) or not (0); 255 = no data."""
        prob = self.probability
        valid = np.isfinite(prob)
        bands = np.stack([
            np.where(valid, np.round(np.nan_to_num(prob) * 100), MASK_NODATA),
            np.where(valid, np.nan_to_num(prob) >= self.threshold, MASK_NODATA),
        ]).astype(np.uint8)
        return Raster(bands, self.transform, self.crs, MASK_NODATA)


def segment_tile(ard: Raster, tile_id: str, options: SegmentationOptions, infer: Infer, *,
                 halo_px: int = 0, landcover: LandCoverFilter | None = None,
                 window: int = 512, overlap: int = 128,
                 layout: windows.WindowLayout | str = windows.WindowLayout.FIXED,
                 max_window: int = windows.DEFAULT_MAX_WINDOW) -> SegmentedTile:
    """Segment one calibrated tile (with ``halo_px`` of context on each side) into footprints.

    ``window``, ``overlap``, ``layout`` and ``max_window`` place the model windows
    (:func:`urbanfabric.footprints.windows.plan_windows`): ``fixed`` 512 px windows cost 2.25
    model pixels per output pixel of a zoom-16 tile, ``fit`` runs a 1088 or 1280 px tile with
    halo as one window (1.13 or 1.56).

    Raises:
        InvalidInput: the ARD is not 3 bands (field ``ard``) or the halo leaves nothing.
    """
    if ard.data.shape[0] != 3:
        raise InvalidInput("ard", f"expected 3 bands (RGB), got {ard.data.shape[0]}")
    if halo_px < 0 or 2 * halo_px >= min(ard.data.shape[1:]):
        raise InvalidInput("halo_px", f"{halo_px} leaves no tile inside a {ard.data.shape[1:]} raster")
    tta = options.tta

    def member_probability(ref: str) -> np.ndarray:
        name, version = split_model_ref(ref)

        def patch_model(batch: np.ndarray) -> np.ndarray:
            return infer(name, version, batch)

        return windows.predict_tiled(ard.data, with_tta(patch_model, tta), window=window, overlap=overlap,
                                     layout=layout, max_window=max_window)

    members = options.members
    if len(members) == 1:
        prob = member_probability(options.model)
        threshold = options.threshold or model_threshold(*split_model_ref(options.model), tta)
    else:
        # The "probability" of a vote is the share of members voting building; of a mean, the
        # mean probability, cut at the options' threshold or the members' mean one.
        prob, threshold = combine(
            [member_probability(m) for m in members],
            [model_threshold(*split_model_ref(m), tta) for m in members],
            options.ensemble_combine, options.min_votes,
            options.threshold if options.ensemble_combine is EnsembleCombine.MEAN and options.threshold else None,
        )
    if landcover is not None:
        prob = landcover(prob)
    # Drop the halo: it only gave the model context at the tile border.
    if halo_px:
        prob = prob[halo_px:-halo_px, halo_px:-halo_px]
    transform = ard.transform @ Affine.translation(halo_px, halo_px)
    footprints = polygons.polygonize(
        prob, transform, str(ard.crs), threshold=threshold,
        min_area_m2=options.min_area_m2 or polygons.DEFAULT_MIN_AREA_M2,
        simplify_tolerance_m=options.simplify_tolerance_m or polygons.DEFAULT_SIMPLIFY_M,
        tile_id=tile_id,
        regularise_tolerance_m=(options.regularise_tolerance_m or DEFAULT_TOLERANCE_M) if options.regularise else 0.0,
        split_touching_buildings=options.split_touching,
    )
    if options.min_confidence:
        footprints = footprints[footprints["footprint_confidence"] >= options.min_confidence].reset_index(drop=True)
    return SegmentedTile(prob, threshold, transform, ard.crs, footprints)
