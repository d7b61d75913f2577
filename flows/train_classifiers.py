"""The ``train-classifiers`` flow: the roof/façade classifiers trained by the same code as the CLI.

Each task runs :func:`models.classifiers.train.run` (train split → best epoch and temperature
on val → test metrics → version folder), exactly what
``python -m models.classifiers.train --task … --out …`` does, so a flow run and a command-line
run produce the same artefacts. Run locally with::

    PYTHONPATH=.:services/lib .venv/bin/python -m flows.train_classifiers --minutes 1 --out .train/flow
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

#: Task → version folder it ships to (under ``out``); the folders the pipeline uses by default.
SHIP_DIRS = {
    "roof_material": "roof_material/v2",
    "roof_shape": "roof_shape/v3",
    "facade_both": "facade_material/v1",
}

#: Test-time augmentation the shipped version of a task is scored and served with (chosen on
#: val by ``python -m models.classifiers.tta``: d4 for roof shape; none elsewhere).
SHIP_TTA = {"roof_shape": "d4"}


@task(cache_policy=NO_CACHE)
def train_one(task_name: str, arch: str, minutes: float, out: str, cross_city: str | None = None) -> dict[str, Any]:
    """Train, calibrate and score one classifier; ship it to ``out`` (empty: do not ship)."""
    from models.classifiers.train import TrainConfig, run, summary_line

    logger = get_run_logger()
    cfg = TrainConfig(arch=arch, minutes=minutes, tta=SHIP_TTA.get(task_name, "none"))
    cmd = f"flow train-classifiers: task={task_name} arch={arch} minutes={minutes} tta={cfg.tta}"
    result = run(task_name, cfg, out or None, cross_city, command=cmd, log=logger.info)
    logger.info(summary_line(result))
    return {"task": task_name, "cross_city": cross_city, "summary": summary_line(result)}


@flow(name="train-classifiers")
def train_classifiers(
    tasks: list[str] = ["roof_material", "roof_shape", "facade_both"],  # noqa: B006 (Prefect parameter default)
    arch: str = "efficientnet_lite0",
    minutes: float = 5.0,
    out: str = "models",
    cross_city: bool = True,
) -> list[dict[str, Any]]:
    """Train every requested task (sequentially: the CPU is shared), then the cross-city façade runs.

    Args:
        tasks: among ``roof_material``, ``roof_shape``, ``facade_both`` (shipped to
            ``<out>/<SHIP_DIRS[task]>``), ``facade_nyc``, ``facade_tokyo`` (not shipped).
        arch: a key of :data:`models.classifiers.nets.ARCHS`.
        minutes: training budget per task.
        out: model repository root to write version folders into.
        cross_city: also train NYC→Tokyo and Tokyo→NYC on the shared labels (not shipped).
    """
    results = []
    for name in tasks:
        dest = str(Path(out) / SHIP_DIRS[name]) if name in SHIP_DIRS else ""
        results.append(train_one(name, arch, minutes, dest))
    if cross_city:
        results.append(train_one("facade_nyc", arch, minutes, "", "tokyo"))
        results.append(train_one("facade_tokyo", arch, minutes, "", "nyc"))
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the flow once in-process (no server needed)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="roof_material,roof_shape,facade_both")
    p.add_argument("--arch", default="efficientnet_lite0")
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--out", default="models")
    p.add_argument("--no-cross-city", action="store_true")
    a = p.parse_args(argv)
    for r in train_classifiers(a.tasks.split(","), a.arch, a.minutes, a.out, not a.no_cross_city):
        print(r["summary"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
