"""COG encode/decode helpers (urbanfabric.io.rasters)."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine

from urbanfabric.io.rasters import Raster, cog_bytes, read_raster


def test_a_preview_read_keeps_the_footprint_and_averages_pixels():
    data = np.arange(3 * 600 * 400, dtype=np.float32).reshape(3, 600, 400) % 97
    raster = Raster(data, Affine(0.5, 0, 13146480.0, 0, -0.5, 2813570.0), "EPSG:3857", float("nan"))
    blob = cog_bytes(raster)
    full = read_raster(blob)
    preview = read_raster(blob, max_size=150)
    assert full.data.shape == (3, 600, 400)
    assert preview.data.shape == (3, 150, 100)
    assert preview.bounds == pytest.approx(full.bounds)
    assert np.nanmean(preview.data) == pytest.approx(np.nanmean(full.data), rel=0.02)
    assert read_raster(blob, max_size=1000).data.shape == full.data.shape
