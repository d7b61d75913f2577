"""The local stack's supervisor: restarts crashed components with backoff until ``down``.

``stack up`` starts it as its own process (``python -m urbanfabric.stack supervise``) and
records it in ``stack.json``; ``down`` stops it before anything else, so nothing is restarted
while the stack is taken down. Each round (every ``interval_s``) it calls
:meth:`urbanfabric.stack.runner.Stack.revive`, which restarts dead components no sooner than
their backoff allows and counts the restarts ``stack status`` shows. It ends by itself when
the stack file no longer names it.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from urbanfabric.stack.runner import Stack


def supervise(stack_dir: Path, workers: int = 1, interval_s: float = 2.0) -> int:
    """Run rounds until SIGTERM or until the stack file stops naming this process."""
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    stack = Stack(stack_dir=stack_dir, workers=workers)
    while not stopping:
        if stack.load_state().get("supervisor", {}).get("pid") not in (None, os.getpid()):
            return 0  # another supervisor took over
        if not stack.load_state().get("components"):
            return 0  # the stack is down
        for name in stack.revive():
            print(f"{time.strftime('%H:%M:%S')} restarted {name}", flush=True)
        time.sleep(interval_s)
    return 0
