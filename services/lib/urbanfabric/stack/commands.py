"""Command line of the local stack: ``up [--only a,b] [--timeout S]``, ``status [--json]``, ``down``.

``urbanfabric stack ARGS`` calls :func:`main` with ARGS; ``python -m urbanfabric.stack ARGS``
does the same.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from urbanfabric.stack.definition import COMPONENTS
from urbanfabric.stack.runner import Stack, StackError, status_rows_as_dicts


def _parser() -> argparse.ArgumentParser:
    names = ", ".join(c.name for c in COMPONENTS)
    parser = argparse.ArgumentParser(
        prog="urbanfabric stack",
        description="Start, check and stop the local stack (all on 127.0.0.1, free ports).",
        epilog=f"components, in start order: {names}",
    )
    help_dir = "state/data/log directory (default $URBANFABRIC_STACK_DIR or <repo>/.stack)"
    parser.add_argument("--stack-dir", type=Path, default=None, help=help_dir)
    # Also accepted after the sub-command; SUPPRESS keeps a value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--stack-dir", type=Path, default=argparse.SUPPRESS, help=help_dir)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", parents=[common], help="start components (default: all) and wait until healthy")
    up.add_argument("--only", default=None, help="comma-separated components; dependencies are added")
    up.add_argument("--timeout", type=float, default=None, help="health timeout per component in seconds")
    up.add_argument("--parallel", type=int, default=3, help="most components starting at once (default 3)")
    up.add_argument("--workers", type=int, default=None,
                    help="processes of each Kafka worker, sharing its topics' partitions (default 1)")
    up.add_argument("--no-supervise", action="store_true",
                    help="do not restart crashed components (default: a supervisor process does, with backoff)")
    status = sub.add_parser("status", parents=[common], help="show each component; exit 1 if a started one is down")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    sub.add_parser("down", parents=[common], help="stop everything and check that no process is left")
    sup = sub.add_parser("supervise", parents=[common], help=argparse.SUPPRESS)
    sup.add_argument("--workers", type=int, default=1)
    sup.add_argument("--interval", type=float, default=2.0)
    return parser


def _fmt_bytes(n: int) -> str:
    return f"{n / 2**20:.0f} MiB" if n else "-"


def _status(stack: Stack, as_json: bool) -> int:
    rows = stack.status()
    if as_json:
        print(json.dumps({"stack_file": str(stack.state_file), "components": status_rows_as_dicts(rows)}, indent=2))
    else:
        print(f"{'COMPONENT':<16} {'STATE':<12} {'PID':>7} {'RSS':>9} {'UPTIME':>8} {'RESTARTS':>8}  ENDPOINT / DETAIL")
        for r in rows:
            pid = str(r.pid) if r.pid else "-"
            uptime = f"{r.uptime_s:.0f}s" if r.uptime_s is not None else "-"
            extra = r.endpoint if r.healthy else (r.detail or r.endpoint)
            print(f"{r.name:<16} {r.state:<12} {pid:>7} {_fmt_bytes(r.rss_bytes):>9} {uptime:>8} {r.restarts:>8}  {extra}")
    started = [r for r in rows if r.state != "not started"]
    if not started:
        if not as_json:
            print("stack is not running")
        return 1
    return 1 if any(r.down for r in rows) else 0


def main(argv: list[str] | None = None) -> int:
    """Run the stack CLI.

    Args:
        argv: Arguments after ``stack`` (e.g. ``["up", "--only", "objectstore"]``).

    Returns:
        Process exit code: 0 on success, 1 on failure, 2 on bad usage, 130 on Ctrl-C.
    """
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help and on errors; return instead
        return int(exc.code or 0)
    try:
        if args.command == "supervise":
            from urbanfabric.stack.supervisor import supervise

            return supervise(args.stack_dir or Stack().stack_dir, args.workers, args.interval)
        stack = Stack(stack_dir=args.stack_dir, workers=getattr(args, "workers", None),
                      supervise=not getattr(args, "no_supervise", True))
        if args.command == "up":
            only = args.only.split(",") if args.only else None
            stack.up(only=only, timeout_s=args.timeout, parallel=args.parallel)
            return 0
        if args.command == "status":
            return _status(stack, args.json)
        stack.down()
        return 0
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`
        return 1


if __name__ == "__main__":
    sys.exit(main())
