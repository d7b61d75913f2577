"""The ``urbanfabric`` command.

    urbanfabric stack up|status|down     the local stack (see docs/operations.md)
    urbanfabric demo                     stack up → map the sample area → export → stack down
    urbanfabric run --west … [options]   start a map-area run on the running stack
    urbanfabric export JOB_ID [DEST]     copy a job's outputs to a local folder
    urbanfabric explain --image F|--job J  heatmaps of why a classifier chose a class (PNGs)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from urbanfabric.footprints.ensemble import EnsembleCombine
from urbanfabric.footprints.tta import TTA


def _local_or_uri(path: str) -> str:
    """URIs as given; local paths made absolute (the flow runner may run elsewhere)."""
    return path if "://" in path else str(Path(path).resolve())


def _run(args: argparse.Namespace) -> int:
    from urbanfabric.settings import Settings
    from urbanfabric.cli.demo import run_map_area

    params: dict = {"region": args.region, "batch_size": args.batch_size, "bucket": args.bucket}
    if args.bbox:
        w, s, e, n = (float(v) for v in args.bbox.split(","))
        params["area"] = {"west": w, "south": s, "east": e, "north": n}
    params["imagery"] = args.imagery or None
    if args.street_views:
        params["street_views"] = args.street_views
    # Only the models given on the command line; the flow's defaults hold for the rest.
    models = {k: v for k, v in {"segmentation": args.segmentation_model,
                                "segmentation_ensemble": args.ensemble,
                                "segmentation_ensemble_combine": args.ensemble_combine,
                                "segmentation_min_votes": args.min_votes,
                                "segmentation_threshold": args.segmentation_threshold,
                                "roof_material": args.roof_material_model, "roof_shape": args.roof_shape_model,
                                "facade_material": args.facade_model,
                                "segmentation_tta": args.tta}.items() if v is not None}
    if models:
        params["models"] = models
    if args.landcover:
        params["landcover"] = {"raster": _local_or_uri(args.landcover), "classes": args.landcover_classes,
                               "settlement": _local_or_uri(args.landcover_settlement) if args.landcover_settlement else ""}
    options = {k: v for k, v in {
        "year": args.year, "max_cloud_cover": args.max_cloud, "basemap": args.basemap,
        "settlement_mask": _local_or_uri(args.settlement_mask) if args.settlement_mask else args.settlement_mask,
        "calibration": args.calibration,
        "resampling": args.resampling,
        "bands": dict(kv.split("=", 1) for kv in args.bands.split(",")) if args.bands else None,
    }.items() if v is not None}
    if options:
        params["imagery_options"] = options
    if args.footprints:
        params["footprints"] = str(Path(args.footprints).resolve()) if not args.footprints.startswith("s3://") else args.footprints
    from urbanfabric.runtime.jobs import new_job_id
    from urbanfabric.io.job_layout import JobLayout
    from urbanfabric.io.object_store import ObjectStore

    params["job_id"] = new_job_id()
    settings = Settings.load()
    run_id, state = run_map_area(settings, params)
    print(f"flow run {run_id} (job {params['job_id']}): {state.type.value} {state.message or ''}")
    store = ObjectStore(settings)
    job_json = JobLayout(params["job_id"]).job_json
    if store.exists(job_json):
        doc = json.loads(store.get_bytes(job_json))
        print(json.dumps(doc.get("summary") or doc.get("error"), indent=2, default=str))
    return 0 if state.is_completed() else 1


def _export(args: argparse.Namespace) -> int:
    from urbanfabric.settings import Settings
    from urbanfabric.cli.demo import export
    from urbanfabric.io.object_store import ObjectStore

    files = export(ObjectStore(Settings.load()), args.job_id, Path(args.dest or f"out/{args.job_id}"))
    print("\n".join(str(f) for f in files))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "stack":
        from urbanfabric.stack.cli import main as stack_main

        return stack_main(argv[1:])
    parser = argparse.ArgumentParser(prog="urbanfabric", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("stack", help="local stack: up | status | down")
    sub.add_parser("demo", help="end-to-end demo on the sample area (KEEP=1 leaves the stack up)")
    run = sub.add_parser("run", help="start a map-area flow run on the running stack")
    run.add_argument("--bbox", help="west,south,east,north in degrees")
    run.add_argument("--imagery", default="sample:xiamen-z18",
                     help="sample:<name>, s3://…/catalog.json, a STAC API / catalog URL, "
                          "cogs:<url>,<url>; '' for none")
    run.add_argument("--year", type=int, help="preferred acquisition year (earlier year, then basemap, as fallback)")
    run.add_argument("--max-cloud", type=float, help="largest accepted cloud-cover share (default 0.10)")
    run.add_argument("--basemap", help="catalog / STAC API used when no year has a clear scene")
    run.add_argument("--bands", help="band mapping of the source, e.g. red=B04,green=B03,blue=B02")
    run.add_argument("--resampling", help="GDAL resampling (nearest, bilinear, cubic, average…)")
    run.add_argument("--settlement-mask", help="vector or raster; only grid cells with settlement are mapped")
    run.add_argument("--calibration", choices=["patch", "city"], help="IQR statistics per patch or per city")
    run.add_argument("--footprints", help="GeoJSON / GeoParquet / .osm.pbf file (skips segmentation)")
    run.add_argument("--segmentation-model", default=None, help="default footprint-unet:v1 (name:version)")
    run.add_argument("--ensemble", default=None,
                     help="further segmentation models combined with --segmentation-model (name:version,…)")
    run.add_argument("--ensemble-combine", choices=[c.value for c in EnsembleCombine], default=None,
                     help="vote (GBM: k of N agree, default) or mean probability")
    run.add_argument("--min-votes", type=int, default=None, help="k of the vote (default: a majority)")
    run.add_argument("--segmentation-threshold", type=float, default=None,
                     help="probability cut, 0-1 (default: the model's own; a mean ensemble: the members' mean)")
    run.add_argument("--roof-material-model", default=None, help="default roof-material:v2 ('' = none)")
    run.add_argument("--roof-shape-model", default=None, help="default roof-shape:v3 ('' = none)")
    run.add_argument("--facade-model", default=None, help="default facade-material:v1 ('' = none); needs --street-views")
    run.add_argument("--tta", choices=[t.value for t in TTA], default=None,
                     help="test-time augmentation of segmentation: 4 or 8 flipped/rotated views averaged; d4-zoom also magnified 1.25x")
    run.add_argument("--landcover", default="", help="land-cover raster (file or s3://) to post-filter footprints (GBM)")
    run.add_argument("--landcover-classes", default="esa-worldcover",
                     help="esa-worldcover, from-glc10, or code=name pairs (cropland, forest, grass, shrub, water, …)")
    run.add_argument("--landcover-settlement", default="", help="settlement raster (non-zero = settled) for the rules")
    run.add_argument("--street-views", default="", help="s3:// URI of a street-level view catalog (GeoJSON/CSV)")
    run.add_argument("--region", default="ASIA_CHN")
    run.add_argument("--batch-size", type=int, default=250)
    run.add_argument("--bucket", default="urbanfabric")
    exp = sub.add_parser("export", help="copy a job's outputs to a local folder")
    exp.add_argument("job_id")
    exp.add_argument("dest", nargs="?")
    from urbanfabric.cli.explain import add_arguments as explain_arguments

    explain_arguments(sub.add_parser("explain", help="Grad-CAM / guided backprop heatmaps as PNGs"))
    args = parser.parse_args(argv)
    if args.command == "demo":
        from urbanfabric.cli.demo import main as demo_main

        return demo_main()
    if args.command == "run":
        return _run(args)
    if args.command == "export":
        return _export(args)
    if args.command == "explain":
        from urbanfabric.cli.explain import run as explain_run

        return explain_run(args)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
