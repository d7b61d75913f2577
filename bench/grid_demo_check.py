"""Does the model-following grid change the demo's tiles? (issue 20, item 0)

Reads the demo area's tiles (the Xiamen sample, ``urbanfabric.cli.demo.SAMPLE_AREA``, 128 px
halo) the old way (1024 px per zoom-16 tile, ``nearest``) and the way a job reads them now
(``flows.map_area.tile_gsd`` of the imagery and the model → ``tiles_for_area(gsd_m=…)``,
``auto`` resampling) through ``acquisition.fetch_tile``, and compares the rasters pixel by pixel.
Identical raw tiles mean identical ARD, masks and footprints downstream. No stack needed::

    PYTHONPATH=.:services/lib nice -n 19 .venv/bin/python bench/grid_demo_check.py
"""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path

import numpy as np

from flows.map_area import tile_gsd
from urbanfabric.cli.demo import SAMPLE_AREA
from urbanfabric.imagery import acquisition
from urbanfabric.imagery.tiles import tiles_for_area
from urbanfabric.io.model_repository import SHARED_DATA
from urbanfabric.io.rasters import Raster, cog_bytes
from urbanfabric.v1 import common_pb2

HALO = 128


def sample_items(tmp: Path, area: tuple[float, float, float, float]) -> list:
    """The sample's zoom-16 blocks around the area as local COGs with STAC items."""
    items = []
    for block_id, raster in acquisition.mosaic_xyz_blocks(SHARED_DATA / "footprints" / "xiamen-z18" / "tiles", 18):
        hrefs = {}
        for b, name in enumerate(acquisition.BAND_ASSETS):
            path = tmp / f"{block_id}-{name}.tif"
            path.write_bytes(cog_bytes(Raster(raster.data[b:b + 1], raster.transform, raster.crs, 0)))
            hrefs[name] = str(path)
        items.append(acquisition.stac_item(block_id, raster, hrefs, dt.datetime(2020, 1, 1, tzinfo=dt.UTC)))
    return items


def main() -> int:
    area = tuple(SAMPLE_AREA[k] for k in ("west", "south", "east", "north"))
    with tempfile.TemporaryDirectory() as tmp:
        items = sample_items(Path(tmp), area)
        source = acquisition.source_gsd(items)
        old = {t.tile_id: t for t in tiles_for_area(area) if acquisition.items_for_tile(items, t)}
        print(f"imagery GSD {source:.4f} m; {len(old)} tiles")
        for version in ("v1", "v5"):
            gsd, warnings = tile_gsd({"segmentation": common_pb2.ModelRef(name="footprint-unet", version=version)},
                                     [], source)
            same = 0
            for t in tiles_for_area(area, gsd_m=gsd):
                if t.tile_id not in old:
                    continue
                before = acquisition.fetch_tile(items, old[t.tile_id], HALO, resampling="nearest").raster
                now = acquisition.fetch_tile(items, t, HALO, model_gsd=gsd).raster
                equal = before.data.shape == now.data.shape and np.array_equal(before.data, now.data) \
                    and before.transform.almost_equals(now.transform)
                same += equal
                print(f"footprint-unet:{version}: {t.tile_id}: {t.size_px} px ({t.ground_resolution_m:.4f} m) "
                      f"vs {old[t.tile_id].size_px} px: {'identical' if equal else 'DIFFERENT'}")
            print(f"footprint-unet:{version}: grid {gsd:.4f} m, {same}/{len(old)} tiles identical, "
                  f"warnings {warnings}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
