"""Segmentation throughput: one 1088×1088 calibrated tile (zoom-16 cell + 32 px halo) of the
real Xiamen imagery through tiled inference and polygonization.

    python bench/bench_segmentation.py [--protocol EMBEDDED|V2_REST|V2_GRPC] [--repeat 3]

EMBEDDED runs the model in-process; V2_* go through a running model server (`make up`).
Reports seconds per tile (median), km² per hour, and peak memory.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "services/lib")]

import numpy as np  # noqa: E402

from bench._util import median, peak_rss_mib, save  # noqa: E402
from urbanfabric import acquisition, calibration, segmentation  # noqa: E402
from urbanfabric.modelclient import InferenceProtocol, ModelClient  # noqa: E402
from urbanfabric.paths import SHARED_DATA  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--protocol", default="EMBEDDED", choices=[x.name for x in InferenceProtocol])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--window", type=int, default=512)
    p.add_argument("--overlap", type=int, default=128)
    args = p.parse_args()
    import torch

    torch.set_num_threads(2)
    protocol = InferenceProtocol[args.protocol]
    if protocol is InferenceProtocol.EMBEDDED:
        client = ModelClient(protocol)
    else:
        from urbanfabric.config import Settings

        s = Settings.load()
        client = ModelClient(protocol, rest_url=s.modelserver_rest, grpc_addr=s.modelserver_grpc, timeout_s=300)
    blocks = acquisition.mosaic_xyz_blocks(SHARED_DATA / "footprints/xiamen-z18/tiles", 18)
    _, raw = next(b for b in blocks if (b[1].data != 0).mean() > 0.95)
    data = np.pad(raw.data, ((0, 0), (32, 32), (32, 32)), mode="reflect")  # the halo
    ard = calibration.iqr_scale(data, nodata=0)
    seconds, polys = [], 0
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        prob = segmentation.predict_tiled(
            ard, lambda b: client.infer("footprint-unet", "v1", b), window=args.window, overlap=args.overlap)
        fp = segmentation.polygonize(prob[32:-32, 32:-32], raw.transform, str(raw.crs), threshold=0.5)
        seconds.append(time.perf_counter() - t0)
        polys = len(fp)
    s = median(seconds)
    km2 = (1024 * raw.resolution) ** 2 / 1e6
    save(f"segmentation_{args.protocol.lower()}", {
        "command": "python " + " ".join(sys.argv),
        "tile_px": list(ard.shape), "window": args.window, "overlap": args.overlap,
        "seconds_per_tile_median": s, "seconds_all": seconds, "footprints": polys,
        "km2_per_hour": km2 / s * 3600, "peak_rss_mib": peak_rss_mib(),
    })


if __name__ == "__main__":
    main()
