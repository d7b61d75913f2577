"""Before/after picture of footprint regularisation on real imagery (docs/img/regularisation_before_after.png).

    PYTHONPATH=.:services/lib OMP_NUM_THREADS=1 nice .venv/bin/python -m bench.regularisation_crop \\
        --model models/footprint_unet/v1 --tiles 3 --tolerances 1.0,2.0 --cache-dir /tmp/reg_seg_cache \\
        --out docs/img/regularisation_before_after.png

Takes the Xiamen test tiles (the demo's imagery source) with the most predicted buildings, runs
the model once per tile (maps reused from ``--cache-dir``), and draws each tile's footprints as
the pipeline makes them without regularisation (left: Douglas–Peucker 0.75 m) and with it
(merged neighbours split; the job default tolerance 1.0 m, then ``--tolerances``' others), on
the image. Prints the buildings and vertices of each column.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np

from models.footprint_eval.__main__ import cached_probability
from models.footprint_eval.regularisation import CRS, GSD_M, ORIGIN
from models.footprint_unet import datasets as D
from models.footprint_unet.net import load_model, read_config


def main(argv: list[str] | None = None) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import shapely
    from affine import Affine
    from shapely import affinity

    from urbanfabric.footprints.polygons import polygonize

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models/footprint_unet/v1")
    parser.add_argument("--tiles", type=int, default=3)
    parser.add_argument("--tolerances", default="1.0,2.0", help="regularised columns (metres)")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("docs/img/regularisation_before_after.png"))
    args = parser.parse_args(argv)
    vd = Path(args.model)
    member = {"model": load_model(vd), "sha256": hashlib.sha256((vd / "model.pt").read_bytes()).hexdigest()}
    threshold = float(read_config(vd)["output"]["threshold"])
    gsd = GSD_M["xiamen"]
    transform = Affine(gsd, 0, ORIGIN[0], 0, -gsd, ORIGIN[1])
    inv = ~transform
    to_px = [inv.a, inv.b, inv.d, inv.e, inv.c, inv.f]
    ranked = []
    for scene in D.load("xiamen", "test"):
        prob = cached_probability(member, scene, "xiamen", "test", args.cache_dir)
        raw = polygonize(prob, transform, CRS, threshold=threshold)
        ranked.append((len(raw), scene, prob))
    ranked.sort(key=lambda r: -r[0])
    tolerances = [float(t) for t in args.tolerances.split(",")]
    columns = [("raw", 0.0)] + [(f"{t} m", t) for t in tolerances]
    fig, axes = plt.subplots(args.tiles, len(columns), figsize=(4 * len(columns), 4 * args.tiles), squeeze=False)
    totals = {label: [0, 0] for label, _ in columns}
    for row, (_, scene, prob) in enumerate(ranked[:args.tiles]):
        image = np.moveaxis(scene.image, 0, -1)
        for col, (label, tol) in enumerate(columns):
            fp = polygonize(prob, transform, CRS, threshold=threshold, regularise_tolerance_m=tol,
                            split_touching_buildings=True).to_crs(CRS)
            ax = axes[row][col]
            ax.imshow(image)
            for poly in fp.geometry:
                px = affinity.affine_transform(poly, to_px)
                x, y = px.exterior.xy
                ax.plot(x, y, color="#ff3b30" if tol == 0 else "#00e5ff", lw=1.2)
                ax.plot(x, y, "o", color="white", ms=1.5)
            verts = int(sum(shapely.get_num_coordinates(p) - 1 - len(p.interiors) for p in fp.geometry))
            totals[label][0] += verts
            totals[label][1] += len(fp)
            ax.set_title(f"{'raw (Douglas–Peucker 0.75 m)' if tol == 0 else f'regularised, {tol} m'}: "
                         f"{len(fp)} buildings, {verts / max(len(fp), 1):.1f} vertices each", fontsize=8)
            ax.set_axis_off()
        axes[row][0].text(2, 12, f"Xiamen z18 {scene.name}", color="white", fontsize=7)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    # A 256-colour palette keeps the picture a few hundred kB in the repository.
    from PIL import Image

    with Image.open(args.out) as im:
        im.convert("RGB").quantize(256).save(args.out, optimize=True)
    for label, (verts, n) in totals.items():
        print(f"{label}: {n} buildings, {verts} vertices ({verts / max(n, 1):.1f} per building)")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
