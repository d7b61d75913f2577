"""COG grids and district tables of the buildings table (urbanfabric.outputs.grids)."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
from rasterio.io import MemoryFile
from rio_cogeo.cogeo import cog_validate
from shapely.geometry import box
from urbanfabric.errors import InvalidInput
from urbanfabric.outputs.grids import (
    district_table,
    grid_key,
    grid_layers,
    rasterize_sums,
    write_grids,
)


class _MemStore:
    def __init__(self):
        self.objects: dict[str, tuple[bytes, str]] = {}

    def put_bytes(self, key, data, content_type="application/octet-stream"):
        self.objects[key] = (data, content_type)
        return f"s3://test/{key}"


def _buildings():
    """Five 10 m squares in UTM 50N (Xiamen): three share a 100 m cell, one has NaN stock."""
    xy = [(600_010, 2_710_010), (600_040, 2_710_060), (600_070, 2_710_020),
          (600_130, 2_710_030), (600_420, 2_709_880)]
    geoms = [box(x, y, x + 10, y + 10) for x, y in xy]
    frame = gpd.GeoDataFrame({
        "building_id": list("abcde"),
        "mass_concrete_kg": [1000.0, 2000.0, 3000.0, 4000.0, np.nan],
        "mass_concrete_kg_p95": [9.0] * 5,
        "mass_steel_kg": [10.0, 20.0, 30.0, 40.0, 50.0],
        "mass_total_kg": [1010.0, 2020.0, 3030.0, 4040.0, np.nan],
        "embodied_co2e_kg": [100.0, 200.0, 300.0, 400.0, np.nan],
        "solar_kwh_per_year": [1.0, 2.0, 3.0, 4.0, 5.0],
    }, geometry=geoms, crs="EPSG:32650")
    return frame.to_crs(4326)


def test_layers_are_the_additive_columns():
    assert grid_layers(_buildings()) == {"mass_concrete_kg": "kg", "mass_steel_kg": "kg",
                                         "mass_total_kg": "kg", "embodied_co2e_kg": "kgCO2e",
                                         "solar_kwh_per_year": "kWh/year"}


def test_sums_per_cell_conserve_totals_and_leave_empty_cells_nodata():
    b = _buildings()
    grids = rasterize_sums(b, 100, ["mass_concrete_kg", "mass_steel_kg"], crs="EPSG:32650")
    conc, count = grids["mass_concrete_kg"], grids["buildings"]
    assert conc.crs.to_epsg() == 32650 and conc.resolution == 100
    assert conc.transform.c % 100 == 0 and conc.transform.f % 100 == 0  # aligned grid
    assert np.nansum(conc.data) == pytest.approx(10_000.0)
    assert np.nansum(grids["mass_steel_kg"].data) == pytest.approx(150.0)
    assert np.nansum(count.data) == 5
    first = conc.data[0][~np.isnan(conc.data[0])]
    assert 6000.0 in first.tolist()  # a, b and c share the cell [600000, 600100)
    assert np.isnan(conc.data).sum() == conc.data.size - 3  # 3 occupied cells
    # The cell of building e holds it in the count but no concrete (NaN skipped, not zero'd).
    col, row = ~conc.transform @ (600_425, 2_709_885)
    assert count.data[0, int(row), int(col)] == 1 and conc.data[0, int(row), int(col)] == 0
    coarse = rasterize_sums(b, 250, ["mass_concrete_kg"], crs="EPSG:32650")["mass_concrete_kg"]
    assert np.nansum(coarse.data) == pytest.approx(10_000.0) and coarse.resolution == 250


def test_write_grids_writes_validated_cogs_with_tags():
    store = _MemStore()
    out = write_grids(store, "job7", _buildings())
    names = {f"{layer}_{s}m" for layer in [*grid_layers(_buildings()), "buildings"] for s in (100, 250)}
    assert set(out) == names
    assert out["mass_concrete_kg_100m"] == "s3://test/jobs/job7/outputs/grids/mass_concrete_kg_100m.tif"
    assert grid_key("job7", "solar_kwh_per_year", 250) in store.objects
    for key, (blob, media) in store.objects.items():
        assert media.startswith("image/tiff") and "cloud-optimized" in media
        with MemoryFile(blob) as mem, mem.open() as src:
            assert src.crs.to_epsg() == 32650  # UTM 50N, the buildings' zone
            tags = src.tags()
            assert tags["layer"] in key and tags["cell_size_m"] in ("100", "250")
            data = src.read(1)
        if "embodied_co2e_kg_100m" in key:
            assert tags["units"] == "kgCO2e" and np.nansum(data) == pytest.approx(1000.0)
    blob = store.objects[grid_key("job7", "mass_total_kg", 100)][0]
    with MemoryFile(blob) as mem:
        with mem.open() as src:
            path = src.name
        assert cog_validate(path)[0]


def test_bad_inputs():
    with pytest.raises(InvalidInput):
        rasterize_sums(_buildings(), 0, ["mass_steel_kg"])
    with pytest.raises(InvalidInput):
        rasterize_sums(_buildings(), 100, ["mass_glass_kg"])
    assert write_grids(_MemStore(), "j", _buildings().iloc[:0]) == {}


def test_district_table():
    b = _buildings()
    districts = gpd.GeoDataFrame({"district": ["west", "east", "far"]},
                                 geometry=[box(600_000, 2_709_000, 600_100, 2_711_000),
                                           box(600_100, 2_709_000, 601_000, 2_711_000),
                                           box(700_000, 2_709_000, 701_000, 2_711_000)],
                                 crs="EPSG:32650")
    t = district_table(b, districts, "district")
    assert t.loc["west", "buildings"] == 3 and t.loc["east", "buildings"] == 2
    assert t.loc["west", "mass_concrete_kg"] == 6000.0 and t.loc["east", "mass_concrete_kg"] == 4000.0
    assert t.loc["far", "buildings"] == 0 and np.isnan(t.loc["far", "mass_steel_kg"])
    with pytest.raises(InvalidInput):
        district_table(b, districts, "name")
