"""``urbanfabric review`` and ``urbanfabric corrections check``: label the least certain buildings (issue 21).

    urbanfabric review JOB --attribute roof_material --n 200 [--out DIR]
    urbanfabric corrections check FILE --job JOB [--attribute A] [--label-column label] [--out DIR]

JOB is a job id (its table, ARD tiles and the package live in the running stack's object
store; the package is also written to ``out/<job>/review/<attribute>/``) or an exported job
folder (``out/<job>/``: no chips, nothing uploaded). Exit status: 0 done, 1 some corrections
rows were rejected (each named in the report), 2 bad input (the message names the field).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from typing import TYPE_CHECKING

from urbanfabric.outputs.review import ATTRIBUTES, SELECTIONS

if TYPE_CHECKING:
    from urbanfabric.io.object_store import ObjectStore
    from urbanfabric.outputs.review_package import TableParts


def add_review_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", help="a job id (object store), or an exported job folder (out/<job>/)")
    parser.add_argument("--attribute", required=True, choices=list(ATTRIBUTES), help="what the reviewer labels")
    parser.add_argument("--n", type=int, default=200, help="how many buildings (default 200)")
    parser.add_argument("--select", choices=list(SELECTIONS), default="uncertainty",
                        help="uncertainty: the least certain, spread over the area (default); random: a "
                             "seeded random sample spread over the area, which also measures the model's "
                             "accuracy there without bias (docs/results.md, learning curves: the review's "
                             "order was no better than random labels for fine-tuning)")
    parser.add_argument("--seed", type=int, default=0, help="seed of --select random (default 0)")
    parser.add_argument("--out", help="local folder of the package (default out/<job>/review/<attribute>/)")


def add_corrections_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    check = sub.add_parser("check", help="validate a corrections file against a job and write the clean table")
    check.add_argument("file", help="a filled review package (review.gpkg / review.csv) or any GeoPackage, "
                                    "GeoParquet, GeoJSON or CSV with building ids or footprints and a label")
    check.add_argument("--job", required=True, help="a job id (object store), or an exported job folder")
    check.add_argument("--attribute", choices=list(ATTRIBUTES),
                       help="what the labels are (default: the package.json beside the file)")
    check.add_argument("--label-column", default="label", help="the column holding the labels (default label)")
    check.add_argument("--min-labels", type=int, default=10, help="fewest usable labels (default 10)")
    check.add_argument("--out", help="folder for corrections.parquet and corrections_report.json "
                                     "(default: beside the file)")


def _job_parts(job: str) -> tuple[TableParts, ObjectStore | None, str]:
    """The job's table reader and, for a job in the store, the store."""
    from urbanfabric.outputs.review_package import folder_parts, store_parts

    folder = Path(job)
    if folder.is_dir():
        return folder_parts(folder), None, folder.name
    from urbanfabric.io.object_store import ObjectStore
    from urbanfabric.settings import Settings

    store = ObjectStore(Settings.load())
    return store_parts(store, job), store, job


def _failure(command: str, exc: Exception) -> int:
    """One line, no traceback, for an error the core raised on purpose; the exit status."""
    from urbanfabric.errors import Unavailable

    if isinstance(exc, Unavailable):
        print(f"urbanfabric {command}: {exc}; is the stack up (urbanfabric stack status)?", file=sys.stderr)
        return 1
    print(f"urbanfabric {command}: {exc}", file=sys.stderr)
    return 2


def run_review(args: argparse.Namespace) -> int:
    from urbanfabric.errors import InvalidInput, NotFound, Unavailable
    from urbanfabric.io.model_repository import model_config
    from urbanfabric.outputs.review import review_attribute
    from urbanfabric.outputs.review_package import review_job, select_for_review, write_package

    try:
        attribute = review_attribute(args.attribute)
        parts, store, job_id = _job_parts(args.job)
        folder = Path(args.out or Path("out") / job_id / "review" / attribute.name)
        if store is None:
            selection = select_for_review(parts, attribute, args.n, model_config, args.select, args.seed)
            files, keys = write_package(folder, selection, job_id), list[str]()
        else:
            selection, files, keys = review_job(store, job_id, attribute, args.n, folder, model_config,
                                                args.select, args.seed)
    except (InvalidInput, NotFound, Unavailable) as exc:
        return _failure("review", exc)
    chips = sum(1 for f in files if f.suffix == ".png")
    print(f"{len(selection.buildings)} of {selection.job_buildings} buildings to review for {attribute.name} "
          f"({chips} chips) in {folder}" + (f" and s3://…/{keys[0].rsplit('/', 1)[0]}/" if keys else ""))
    return 0


def run_corrections(args: argparse.Namespace) -> int:
    import geopandas as gpd
    import pandas as pd

    from urbanfabric.errors import InvalidInput, NotFound, Unavailable
    from urbanfabric.io.model_repository import model_config
    from urbanfabric.outputs.corrections import check_corrections, read_corrections
    from urbanfabric.outputs.review import class_vocabulary, review_attribute

    path = Path(args.file)
    try:
        name = args.attribute
        meta = path.parent / "package.json"
        if not name and meta.exists():
            name = json.loads(meta.read_text()).get("attribute")
        if not name:
            raise InvalidInput("attribute", f"no --attribute given and no package.json beside {path}")
        attribute = review_attribute(name)
        table = read_corrections(path)
        parts, _, job_id = _job_parts(args.job)
        pieces = [p[[c for c in ("building_id", "model_versions", "geometry") if c in p]] for p in parts()]
        buildings = gpd.GeoDataFrame(pd.concat(pieces, ignore_index=True), geometry="geometry", crs="EPSG:4326")
        vocabulary = class_vocabulary(buildings.get("model_versions", pd.Series(dtype=str)).dropna().astype(str),
                                      attribute, model_config)
        clean, report = check_corrections(table, buildings, attribute, vocabulary, label_column=args.label_column,
                                          source=path.name, min_labels=args.min_labels)
    except (InvalidInput, NotFound, Unavailable) as exc:
        return _failure("corrections check", exc)
    out = Path(args.out) if args.out else path.parent
    out.mkdir(parents=True, exist_ok=True)
    clean.assign(attribute=attribute.name, job_id=job_id).to_parquet(out / "corrections.parquet", index=False)
    (out / "corrections_report.json").write_text(json.dumps(report.as_dict(), indent=2, default=str))
    print(report.summary())
    print(f"{out / 'corrections.parquet'}, {out / 'corrections_report.json'}")
    return 1 if report.problems else 0
