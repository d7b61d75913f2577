"""The ``urbanfabric`` command.

    urbanfabric stack up|status|down     the local stack (see docs/operations.md)
    urbanfabric demo                     stack up → map the sample area → export → stack down
    urbanfabric run --bbox W,S,E,N [options]  start a map-area run on the running stack
    urbanfabric export JOB_ID [DEST] [--format parquet|gpkg|fgb]
                                         a job's outputs (table, grids, maps, tiles, report, STAC) in a folder
    urbanfabric open JOB_ID|FOLDER       open the job's interactive map (map.html, or the tile viewer served on 127.0.0.1)
    urbanfabric explain --image F|--job J  heatmaps of why a classifier chose a class (PNGs)
    urbanfabric models list|publish|check  the registry's served versions in the object store
    urbanfabric dlq list|replay [--job J]  tasks the workers set aside, why, and sending them again
    urbanfabric review JOB --attribute A --n 200   a package of the least certain buildings to label
    urbanfabric corrections check FILE --job J     validate labels against a job (clean table + report)
    urbanfabric learn JOB --attribute A --corrections F   fine-tune on the corrections; register and serve if better
    urbanfabric run --job J --refresh A      re-map a job's buildings with the newest fine-tuned model
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _run(args: argparse.Namespace) -> int:
    from urbanfabric.cli.demo import run_map_area
    from urbanfabric.cli.spec_flags import spec_from_args
    from urbanfabric.errors import InvalidInput, Unavailable
    from urbanfabric.io.job_layout import JobLayout
    from urbanfabric.io.object_store import ObjectStore
    from urbanfabric.runtime.jobs import new_job_id
    from urbanfabric.settings import Settings

    settings = Settings.load()
    try:
        if getattr(args, "refresh", None):
            from urbanfabric.cli.refresh import given, refresh_spec
            from urbanfabric.runtime.learning import model_prefix

            spec, notes = refresh_spec(given(args), ObjectStore(settings), model_prefix(settings))
            print("\n".join(f"refresh {n}" for n in notes))
        else:
            spec = spec_from_args(args)
    except (InvalidInput, Unavailable) as exc:
        print(f"urbanfabric run: {exc}", file=sys.stderr)
        return 2
    spec = spec.model_copy(update={"job_id": spec.job_id or new_job_id()})
    run_id, state = run_map_area(settings, {"spec": spec.model_dump(mode="json")})
    print(f"flow run {run_id} (job {spec.job_id}): {state.type.value} {state.message or ''}")
    store = ObjectStore(settings)
    job_json = JobLayout(str(spec.job_id)).job_json
    if store.exists(job_json):
        doc = json.loads(store.get_bytes(job_json))
        if doc.get("summary"):
            from urbanfabric.outputs.summary import Summary

            # The text, not the JSON: job.json's summary carries histograms (hundreds of counts).
            print(Summary(**doc["summary"]).text())
            print(f"report: urbanfabric export {spec.job_id} DIR, then open DIR/report.html")
        else:
            print(json.dumps(doc.get("error"), indent=2, default=str))
    return 0 if state.is_completed() else 1


def _export(args: argparse.Namespace) -> int:
    from urbanfabric.cli.demo import export
    from urbanfabric.errors import InvalidInput, NotFound
    from urbanfabric.io.object_store import ObjectStore
    from urbanfabric.settings import Settings

    try:
        files = export(ObjectStore(Settings.load()), args.job_id, Path(args.dest or f"out/{args.job_id}"),
                       args.format)
    except (InvalidInput, NotFound) as exc:
        print(f"urbanfabric export: {exc}", file=sys.stderr)
        return 2
    print("\n".join(str(f) for f in files))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "stack":
        from urbanfabric.stack.commands import main as stack_main

        return stack_main(argv[1:])
    parser = argparse.ArgumentParser(prog="urbanfabric", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("stack", help="local stack: up | status | down")
    sub.add_parser("demo", help="end-to-end demo on the sample area (KEEP=1 leaves the stack up)")
    run = sub.add_parser("run", help="start a map-area flow run on the running stack",
                         description="Start a map-area flow run. The flags are the fields of the job spec "
                                     "(urbanfabric.job_spec.JobSpec), the same as the Prefect form's.")
    from urbanfabric.cli.spec_flags import add_spec_arguments

    add_spec_arguments(run)
    exp = sub.add_parser("export", help="copy a job's outputs (table, grids, maps, report, STAC) to a folder",
                         description="Copy a finished job's outputs to a local folder: the buildings table, "
                                     "the grids (COGs), map.png and map.html, report.md and report.html, "
                                     "job.json and the STAC collection with relative hrefs.")
    exp.add_argument("job_id")
    exp.add_argument("dest", nargs="?", help="folder to write (default out/<job_id>)")
    exp.add_argument("--format", choices=["parquet", "gpkg", "fgb"], default="parquet",
                     help="the buildings table: the GeoParquet files as written (default), one "
                          "GeoPackage or one FlatGeobuf file")
    from urbanfabric.cli.open_map import add_arguments as open_arguments

    open_arguments(sub.add_parser("open", help="open a job's interactive map (map.html, or viewer.html served on loopback)"))
    from urbanfabric.cli.heatmaps import add_arguments as explain_arguments

    explain_arguments(sub.add_parser("explain", help="Grad-CAM / guided backprop heatmaps as PNGs"))
    from urbanfabric.cli.models import add_arguments as models_arguments

    models_arguments(sub.add_parser("models", help="list, publish or check the served model versions"))
    from urbanfabric.cli.dlq import add_arguments as dlq_arguments

    dlq_arguments(sub.add_parser("dlq", help="list or replay dead-lettered tasks"))
    from urbanfabric.cli.review import add_corrections_arguments, add_review_arguments

    add_review_arguments(sub.add_parser("review", help="package the least certain buildings for labelling"))
    add_corrections_arguments(sub.add_parser("corrections", help="check a corrections (labels) file"))
    from urbanfabric.cli.learn import add_arguments as learn_arguments

    learn_arguments(sub.add_parser("learn", help="fine-tune a job's model on corrections; serve it if better"))
    args = parser.parse_args(argv)
    if args.command == "demo":
        from urbanfabric.cli.demo import main as demo_main

        return demo_main()
    if args.command == "run":
        return _run(args)
    if args.command == "export":
        return _export(args)
    if args.command == "open":
        from urbanfabric.cli.open_map import run as open_run

        return open_run(args)
    if args.command == "explain":
        from urbanfabric.cli.heatmaps import run as explain_run

        return explain_run(args)
    if args.command == "dlq":
        from urbanfabric.cli.dlq import run as dlq_run

        return dlq_run(args)
    if args.command == "models":
        from urbanfabric.cli.models import run as models_run

        return models_run(args)
    if args.command == "review":
        from urbanfabric.cli.review import run_review

        return run_review(args)
    if args.command == "corrections":
        from urbanfabric.cli.review import run_corrections

        return run_corrections(args)
    if args.command == "learn":
        from urbanfabric.cli.learn import run as learn_run

        return learn_run(args, argv)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
