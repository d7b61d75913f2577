"""``urbanfabric learn``: fine-tune a job's model on checked corrections; serve it when better (issue 21).

    urbanfabric learn JOB --attribute roof_material --corrections out/JOB/review/roof_material/corrections.parquet
                      [--seed 0] [--no-serve] [--json FILE]

The same step as the Prefect deployment ``fine-tune/fine-tune``. Exit status: 0 a better
version was registered (and served), 1 the fine-tuned model was not better (nothing
registered; why is printed), 2 bad input (the message names the field or the rows).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from urbanfabric.outputs.learning_data import LEARNABLE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", help="the job id whose predictions were corrected (object store)")
    parser.add_argument("--attribute", required=True, choices=list(LEARNABLE), help="the attribute to fine-tune")
    parser.add_argument("--corrections", required=True,
                        help="corrections.parquet from `urbanfabric corrections check`, or a filled package / "
                             "any table it accepts (checked here first); a local path or s3://…")
    parser.add_argument("--seed", type=int, default=0, help="seeds the hold-out and the fine-tune (default 0)")
    parser.add_argument("--no-serve", action="store_true", help="register only; do not ask the model server to load it")
    parser.add_argument("--json", help="also write the whole result (comparison, timings, keys) to this file")


def run(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    from urbanfabric.errors import InvalidInput, NotFound, Unavailable
    from urbanfabric.runtime.learning import learn_and_serve
    from urbanfabric.settings import Settings

    command = "urbanfabric " + shlex.join(argv if argv is not None else sys.argv[1:])
    settings = Settings.load()
    # Parents are read where the stack serves them from (a learned parent is only there): for
    # this call only, so that a caller's process (a test, a notebook) keeps its environment.
    set_here = bool(settings.model_store) and "URBANFABRIC_MODEL_STORE" not in os.environ
    if set_here:
        os.environ["URBANFABRIC_MODEL_STORE"] = settings.model_store
    try:
        result, served = learn_and_serve(settings, args.job, args.attribute, args.corrections,
                                         seed=args.seed, command=command, serve=not args.no_serve)
    except (InvalidInput, NotFound, Unavailable) as exc:
        print(f"urbanfabric learn: {exc}", file=sys.stderr)
        return 2
    finally:
        if set_here:
            os.environ.pop("URBANFABRIC_MODEL_STORE", None)
    print(result.summary())
    if served:
        print(served)
    if args.json:
        Path(args.json).write_text(json.dumps(result.as_dict(), indent=2, default=str) + "\n")
    return 0 if result.registered else 1
