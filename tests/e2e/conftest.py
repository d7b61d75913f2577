"""The real local stack, started once for the end-to-end tests by the project's own code."""

from __future__ import annotations

import os
import time

import psutil
import pytest

from urbanfabric.io.model_repository import SHARED_DATA


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    if not (SHARED_DATA / "footprints" / "xiamen-z18").is_dir():
        pytest.skip(f"sample data not available: {SHARED_DATA} (needed for the sample imagery)")
    stack_dir = tmp_path_factory.mktemp("stack")
    os.environ["URBANFABRIC_STACK_DIR"] = str(stack_dir)
    # Endpoints come from this stack's file only: drop overrides other tests may have left.
    for name in list(os.environ):
        if name == "PREFECT_API_URL" or (name.startswith("URBANFABRIC_") and name not in (
                "URBANFABRIC_STACK_DIR", "URBANFABRIC_HOME", "URBANFABRIC_SHARED_DATA")):
            os.environ.pop(name)
    from urbanfabric.settings import Settings
    from urbanfabric.stack.commands import main as stack_main

    t0 = time.time()
    rc = stack_main(["up"])
    if rc != 0:
        stack_main(["down"])
        pytest.fail(f"stack up failed (rc={rc}); logs in {stack_dir}/logs")
    print(f"stack up in {time.time() - t0:.1f} s")
    settings = Settings.load()
    state = (stack_dir / "stack.json").read_text()
    yield settings
    import json

    pids = [c.get("pid") for c in json.loads(state).get("components", {}).values() if isinstance(c, dict)]
    assert stack_main(["down"]) == 0
    alive = [p for p in pids if p and psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"processes left after stack down: {alive}"
