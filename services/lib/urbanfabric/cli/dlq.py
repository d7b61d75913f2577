"""``urbanfabric dlq``: the tasks the workers set aside, why, and sending them again.

    urbanfabric dlq list [--job JOB_ID]                  one line per dead letter, with its reason
    urbanfabric dlq replay [--job JOB_ID] [--offset N …] [--yes]   send them back to their topics

Replay after fixing the cause (a service that was down past the retry budget, a model that was
missing): tasks already done are answered from their markers, so nothing is done twice. Letters
whose payload does not parse stay malformed; replaying them only sets them aside again.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("list", "replay"))
    parser.add_argument("--job", default="", help="only this job's letters")
    parser.add_argument("--offset", type=int, nargs="*", default=None,
                        help="only the letters at these dead-letter-topic offsets (from `list`)")
    parser.add_argument("--yes", action="store_true", help="replay without asking")


def run(args: argparse.Namespace) -> int:
    from urbanfabric.runtime.dead_letters import read_letters, replay
    from urbanfabric.settings import Settings

    settings = Settings.load()
    letters = read_letters(settings, job_id=args.job)
    if args.offset is not None:
        letters = [x for x in letters if x.dlq_offset in set(args.offset)]
    for x in letters:
        print(f"{x.dlq_offset:>6}  {x.letter.topic}@{x.letter.partition}:{x.letter.offset}  "
              f"job={x.job_id or '?'} {x.item or ''}  attempts={x.letter.attempts}  {x.reason}")
    if args.action == "list":
        print(f"{len(letters)} dead letter(s)")
        return 0
    if not letters:
        print("nothing to replay")
        return 0
    if not args.yes and input(f"replay {len(letters)} task(s)? [y/N] ").strip().lower() != "y":
        return 1
    print(f"replayed {replay(settings, letters)} task(s)")
    return 0
