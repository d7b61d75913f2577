"""The fault table of docs/reliability.md (issue 19, item 3) outside pytest: kill -9 components
of the running local stack during jobs and compare each job's buildings table with a fault-free
run's. The jobs, the kills and the comparison are those of the CI test
(``tests/e2e/test_faults.py``; see ``tests/e2e/fault_runs.py``); here the sizes can be raised.

Five jobs: a segmented 16-tile area without faults and with the tile-stage parts killed in
turn; a footprints job (≥ ``--total`` buildings) without faults, with the building-stage parts,
the broker and the object store killed in turn, and with its flow runner killed and the job
resumed by id.

    urbanfabric stack up
    PYTHONPATH=.:services/lib .venv/bin/python bench/faults.py --json bench/results/faults.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "services/lib")]

from tests.e2e import fault_runs as fr  # noqa: E402
from urbanfabric.io.object_store import ObjectStore  # noqa: E402
from urbanfabric.settings import Settings  # noqa: E402
from urbanfabric.stack import Stack  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tile-kills", default=",".join(fr.TILE_KILLS), help="killed in the segmented job")
    ap.add_argument("--building-kills", default=",".join(fr.BUILDING_KILLS), help="killed in the footprints job")
    ap.add_argument("--skip-segmented", action="store_true")
    ap.add_argument("--skip-flow-runner", action="store_true")
    ap.add_argument("--on-imagery", type=int, default=200, help="footprints of the footprints job on the imagery")
    ap.add_argument("--total", type=int, default=5000, help="footprints of the footprints job, at least")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if fr.sample_missing():
        print(fr.sample_missing(), file=sys.stderr)
        return 2
    stack = Stack()
    if not all(r.healthy for r in stack.status()):
        print("the local stack is not up and healthy: run `urbanfabric stack up` first", file=sys.stderr)
        return 2
    settings = Settings.load()
    store = ObjectStore(settings)
    fr.register_sample_imagery(settings, store)
    runs: list[fr.Outcome] = []
    if not args.skip_segmented:
        base = fr.run_job(settings, store, "segmented, fault-free", fr.segmented_spec)
        runs.append(base)
        if base.state == "COMPLETED":
            runs.append(fr.faulted_run(settings, stack, store, "segmented, tile-stage parts killed",
                                       fr.segmented_spec, tuple(k for k in args.tile_kills.split(",") if k), base))
    with tempfile.TemporaryDirectory() as tmp:
        spec = fr.footprints_spec(fr.footprints_file(Path(tmp), args.on_imagery, args.total))
        base = fr.run_job(settings, store, "footprints, fault-free", spec)
        runs.append(base)
        if base.state == "COMPLETED":
            kills = tuple(k for k in args.building_kills.split(",") if k)
            runs.append(fr.faulted_run(settings, stack, store, "footprints, parts killed", spec, kills, base))
            if not args.skip_flow_runner:
                runs.append(fr.flow_runner_run(settings, stack, store, spec, base))
    print(fr.markdown(runs))
    if args.json:
        args.json.write_text(json.dumps([o.as_dict() for o in runs], indent=2, default=str) + "\n")
    baselines_ok = all(o.state == "COMPLETED" for o in runs if "fault-free" in o.name)
    faulted_ok = all(o.same_table and all(k.injected for k in o.kills) for o in runs if o.kills)
    return 0 if baselines_ok and faulted_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
